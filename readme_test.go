// The README's curl walkthrough, pasted into bash against a running relay:
// the README stays true.

package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// readmeSection returns the README from heading on; it skips the test
// when the tools its examples need are missing (fails under CI=true).
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	for _, tool := range []string{"bash", "curl", "sed"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is needed and missing", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(readme), heading)
	require.True(t, ok, "README has the section %q", heading)
	return section
}

// runReadme pastes the first sh block after heading in the README into
// bash against a fresh relay, and returns what it printed and the store.
func runReadme(t *testing.T, heading string) (out, db string) {
	t.Helper()
	db = filepath.Join(t.TempDir(), "c2cvia.db")
	base, _ := startRun(t, nil, "serve", "--addr", "127.0.0.1:0", "--db", db)
	paste := readmeScript(t, heading, base)
	b, err := exec.Command("bash", "-euo", "pipefail", "-c", paste).CombinedOutput()
	require.NoError(t, err, "%s", b)
	return string(b), db
}

// readmeScript returns the first sh block after heading in the README,
// ready to paste against the relay at base.
func readmeScript(t *testing.T, heading, base string) string {
	t.Helper()
	section := readmeSection(t, heading)
	script := regexp.MustCompile("(?s)```sh\n(.*?)```").FindStringSubmatch(section)
	require.NotNil(t, script, "the section has a sh block")
	require.Contains(t, script[1], "RELAY=http://localhost:8080\n")
	return strings.Replace(script[1], "RELAY=http://localhost:8080\n", "RELAY="+base+"\n", 1)
}

func TestReadmeWalkthrough(t *testing.T) {
	t.Parallel()
	out, db := runReadme(t, "## One exchange with curl")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3, "%s", out)
	assert.Contains(t, lines[0], `"simQueryParams":{"name":"Ada"}`)
	assert.Contains(t, lines[1], `"status":"answered"`)
	assert.Contains(t, lines[2], `"sim_res":{"simBody":{"greeting":"hello, Ada"},"simHeaders":{},"simStatus":200}`)

	stdout, err := runCLI(t, nil, "inspect", "--db", db)
	require.NoError(t, err)
	assert.Regexp(t, `demo\s+0\s+0\s+1\s`, stdout, "inspect shows the answered request")
}

// TestReadmeVia: the gateway example, curl playing both the tab and the
// visitor.
func TestReadmeVia(t *testing.T) {
	t.Parallel()
	out, _ := runReadme(t, "## Serve a page from a browser tab")
	assert.Equal(t, "<h1>Hello from a tab</h1>", strings.TrimSpace(out))
}

// TestReadmePeerWalkthrough: the README's peer messaging block, pasted into
// bash against a running relay, prints what the README says it prints.
func TestReadmePeerWalkthrough(t *testing.T) {
	t.Parallel()
	section := readmeSection(t, "## Peer messaging")
	blocks := regexp.MustCompile("(?s)```(sh|json)\n(.*?)```").FindAllStringSubmatch(section, 2)
	require.Len(t, blocks, 2, "a sh block and the json it prints")
	require.Equal(t, "sh", blocks[0][1])
	script, printed := blocks[0][2], strings.TrimSpace(blocks[1][2])
	require.Contains(t, script, "RELAY=http://localhost:8080\n")

	db := filepath.Join(t.TempDir(), "c2cvia.db")
	base, _ := startRun(t, nil, "serve", "--addr", "127.0.0.1:0", "--db", db)
	paste := strings.Replace(script, "RELAY=http://localhost:8080\n", "RELAY="+base+"\n", 1)
	out, err := exec.Command("bash", "-euo", "pipefail", "-c", paste).CombinedOutput()
	require.NoError(t, err, "%s", out)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n") // every reply ends in a newline
	require.Len(t, lines, 6, "%s", out)
	assert.JSONEq(t, `{"topic":"news","subscribed":true}`, lines[0])
	assert.JSONEq(t, `{"id":1}`, lines[1])
	assert.JSONEq(t, `{"id":2,"receivers":1}`, lines[2])
	assert.JSONEq(t, `{"id":3,"receivers":1}`, lines[3])
	// The README's reply with its "…" filled in.
	ellipsis := regexp.MustCompile(`"(from|sent_at)":"[^"]*"`)
	assert.Equal(t, printed, ellipsis.ReplaceAllString(lines[4], `"$1":"…"`))
	assert.Contains(t, lines[5], `{"peers":[{"peer_id":`)
	assert.Equal(t, 2, strings.Count(lines[5], `"peer_id"`), "Ada and Bob")
}

// TestReadmeFlags: the README's flag table names every serve flag with its
// variable and default.
func TestReadmeFlags(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	defaults := map[string]string{ // how the README writes pflag's defaults
		"1m0s": "60s", "5m0s": "5m", "10m0s": "10m", "30s": "30s", "15s": "15s", "24h0m0s": "24h", "1h0m0s": "1h",
		"2m0s": "2m", "[]": "",
	}
	newServeCmd(io.Discard, io.Discard).Flags().VisitAll(func(f *pflag.Flag) {
		if f.Name == "help" {
			return
		}
		def := f.DefValue
		if d, ok := defaults[def]; ok {
			def = d
		}
		row := fmt.Sprintf("| `--%s` | `%s` | `%s` |", f.Name, envName(f.Name), def)
		if def == "" { // no default: an empty cell
			row = fmt.Sprintf("| `--%s` | `%s` | |", f.Name, envName(f.Name))
		}
		assert.True(t, strings.Contains(string(readme), row), "README flag table lacks the row %s", row)
	})
}

// TestReadmeCodeMap: every file and folder the README's code map names
// exists, and every Go file of the relay (tests aside) is named there.
func TestReadmeCodeMap(t *testing.T) {
	t.Parallel()
	section := readmeSection(t, "## Code map")
	section, _, _ = strings.Cut(section, "\n## ")
	named := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| ([^|]+) \\|").FindAllStringSubmatch(section, -1) {
		for _, f := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(m[1], -1) {
			named[f[1]] = true
		}
	}
	require.NotEmpty(t, named)
	for f := range named {
		if strings.Contains(f, "*") {
			matches, err := filepath.Glob(f)
			require.NoError(t, err)
			assert.NotEmpty(t, matches, "the code map names %s, which matches nothing", f)
			continue
		}
		_, err := os.Stat(strings.TrimSuffix(f, "/"))
		assert.NoError(t, err, "the code map names %s, which does not exist", f)
	}
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	for _, f := range files {
		if !strings.HasSuffix(f, "_test.go") {
			assert.True(t, named[f], "the code map does not name %s", f)
		}
	}
}

// TestReadmeSaysWhatACrashLoses: the README says what lives only in memory
// and what a crash does to it: the held gateway requests, when the store
// takes one over, and the caches rebuilt at start.
func TestReadmeSaysWhatACrashLoses(t *testing.T) {
	t.Parallel()
	section := readmeSection(t, "## How it behaves")
	_, held, ok := strings.Cut(section, "**What lives only in memory, and what a crash does to it.**")
	require.True(t, ok, "the README has the section")
	held, _, _ = strings.Cut(held, "\n- **")
	for _, says := range []string{"holds it in memory", "504", "SIGTERM", "streamed", "`kill -9`", "404", "`inspect` does not see them",
		"c2cvia_gateway_held_requests", "`--max-queue`", "message cache"} {
		assert.Contains(t, held, says)
	}
}
