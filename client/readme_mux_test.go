package client_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestReadmeMuxApp: the README's standard-mux app, built as a module of
// its own with the README's go.mod, serves through the relay, and the
// README's two curl requests get the answers the README shows (Date and
// Content-Length aside); Ctrl-C stops it cleanly.
func TestReadmeMuxApp(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join(moduleRoot, "README.md"))
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(readme), "### A standard-mux app behind the relay")
	require.True(t, ok, "README has the section")
	section, _, _ = strings.Cut(section, "\n## ")
	program := regexp.MustCompile("(?s)```go\n(.*?)```").FindStringSubmatch(section)
	require.NotNil(t, program, "the section shows main.go")
	shell := regexp.MustCompile("(?s)```sh\n(.*?)```").FindStringSubmatch(section)
	require.NotNil(t, shell, "the section shows how to run it")
	output := regexp.MustCompile("(?s)answers as the app would on its own port:\n\n```\n(.*?)```").FindStringSubmatch(section)
	require.NotNil(t, output, "the section shows the answers")
	_, goClient, _ := strings.Cut(string(readme), "## Go client")
	gomod := regexp.MustCompile("(?s)```\n(module example.com/app\n.*?)```").FindStringSubmatch(goClient)
	require.NotNil(t, gomod, "the Go client section shows the go.mod")

	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"),
		[]byte(strings.Replace(gomod[1], "=> ../c2cvia\n", "=> "+moduleRoot+"\n", 1)), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"), []byte(program[1]), 0o644))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	app := filepath.Join(dir, "app")
	args := []string{"build", "-mod=readonly", "-buildvcs=false", "-o", app}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.CommandContext(ctx, goCmd, append(args, ".")...)
	build.Dir = dir
	build.Env = append(withoutGoSettings(os.Environ()), "GOPROXY=off", "GOFLAGS=", "GOWORK=off")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build:\n%s", out)

	// The README's environment, with this test's relay and a net of its own.
	net := testNet(t)
	env := regexp.MustCompile(`(C2CVIA_\w+)=(\S+)`).FindAllStringSubmatch(shell[1], -1)
	require.Len(t, env, 3, "the README sets the relay, the net and the key")
	run := exec.CommandContext(ctx, app)
	run.Env = os.Environ()
	for _, kv := range env {
		v := kv[2]
		switch kv[1] {
		case "C2CVIA_RELAY":
			v = relayURL
		case "C2CVIA_NET":
			v = net
		}
		run.Env = append(run.Env, kv[1]+"="+v)
	}
	var stderr strings.Builder
	run.Stderr = &stderr
	require.NoError(t, run.Start())
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	t.Cleanup(func() { run.Process.Kill() })

	// The README's requests, as curl sends them, through the gateway.
	curls := regexp.MustCompile(`(?m)^curl (.*)$`).FindAllStringSubmatch(shell[1], -1)
	require.Len(t, curls, 2)
	var got strings.Builder
	call := func(method, path, body string, head bool) {
		var r io.Reader
		if body != "" {
			r = strings.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, relayURL+"/via/"+net+path, r)
		require.NoError(t, err)
		if body != "" {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded") // curl -d
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		if head {
			got.WriteString("HTTP/1.1 " + resp.Status + "\n")
			for _, h := range []string{"Content-Type", "Location"} {
				got.WriteString(h + ": " + resp.Header.Get(h) + "\n")
			}
			got.WriteString("\n")
		}
		got.Write(b)
	}
	assert.Contains(t, curls[0][1], "/via/store/items/42")
	call(http.MethodGet, "/items/42", "", false)
	assert.Contains(t, curls[1][1], "-X POST")
	assert.Contains(t, curls[1][1], "/via/store/items -d '{\"name\":\"desk\"}'")
	call(http.MethodPost, "/items", `{"name":"desk"}`, true)
	assert.Equal(t, output[1], strings.ReplaceAll(got.String(), "/via/"+net+"/", "/via/store/"))

	require.NoError(t, run.Process.Signal(syscall.SIGINT))
	select {
	case err := <-exited:
		assert.NoError(t, err, "the app stops cleanly on Ctrl-C: %s", stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("the app did not stop within 30 s of Ctrl-C")
	}
}
