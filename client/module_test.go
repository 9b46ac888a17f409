// A module of its own, outside this one, builds against this checkout and
// calls the relay with the client package, as the README tells a user to
// do while the module is unpublished.

package client_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// appMain serves a handler as the SimServer of a net and calls it through a
// Session's HTTPClient: app RELAY_URL NET.
const appMain = `package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/c2cvia/c2cvia/client"
)

func main() {
	if len(os.Args) != 3 {
		log.Fatal("usage: app RELAY_URL NET")
	}
	relayURL, net := os.Args[1], os.Args[2]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s answered by example.com/app", r.Method, r.URL.Path)
	})
	serveCtx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- client.Serve(serveCtx, relayURL, net, "example-app-key-0123456789", h) }()

	s, err := client.Login(ctx, relayURL, net)
	if err != nil {
		log.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://c2cvia/greeting", nil)
	if err != nil {
		log.Fatal(err)
	}
	resp, err := s.HTTPClient().Do(req)
	if err != nil {
		log.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Status, string(body))

	stop()
	if err := <-served; !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
}
`

// TestModuleOutside: example.com/app, with the go.mod of the README's "Go
// client" section (which requires github.com/c2cvia/c2cvia v0.0.0 and
// replaces it with ../c2cvia, here this checkout), builds with the network
// shut off and without a go.sum, then calls the relay. No checksum is
// needed: the client package imports only the standard library, and with
// module graph pruning a module needs checksums only for the modules whose
// packages it builds. The checkout's go.sum, its dependencies and its VCS
// state have no say.
func TestModuleOutside(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join(moduleRoot, "README.md"))
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(readme), "## Go client")
	require.True(t, ok, "README has the section")
	gomod := regexp.MustCompile("(?s)```\n(module example.com/app\n.*?)```").FindStringSubmatch(section)
	require.NotNil(t, gomod, "the section shows the go.mod of example.com/app")
	const checkout = "=> ../c2cvia\n"
	require.Contains(t, gomod[1], checkout)

	dir := t.TempDir()
	write := func(name, text string) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644))
	}
	write("go.mod", strings.Replace(gomod[1], checkout, "=> "+moduleRoot+"\n", 1))
	write("main.go", appMain)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	app := filepath.Join(dir, "app")
	args := []string{"build", "-mod=readonly", "-buildvcs=false", "-o", app}
	if raceEnabled {
		args = append(args, "-race") // what this test build compiled already
	}
	build := exec.CommandContext(ctx, goCmd, append(args, ".")...)
	build.Dir = dir
	build.Env = append(withoutGoSettings(os.Environ()),
		"GOPROXY=off", // no network: nothing may be downloaded
		"GOFLAGS=",    // the flags above, and no others from the shell
		"GOWORK=off",  // no go.work of the checkout's
	)
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go %s:\n%s", strings.Join(args, " "), out)
	_, err = os.Stat(filepath.Join(dir, "go.sum"))
	assert.ErrorIs(t, err, os.ErrNotExist, "no checksum was needed")

	run := exec.CommandContext(ctx, app, relayURL, testNet(t))
	out, err = run.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Equal(t, "200 OK GET /greeting answered by example.com/app\n", string(out))
}

// withoutGoSettings is env without the settings TestModuleOutside sets.
func withoutGoSettings(env []string) []string {
	var out []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "GOPROXY", "GOFLAGS", "GOWORK":
			continue
		}
		out = append(out, kv)
	}
	return out
}
