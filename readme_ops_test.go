// The README's "Operating it": its proxy configurations fit the relay's
// settings, its command lines name flags the commands have, and its
// backup, purge and net commands run against a serving relay.

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// operatingSection is the README's "Operating it" and its fenced blocks
// by language.
func operatingSection(t *testing.T) (string, map[string][]string) {
	t.Helper()
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(readme), "\n## Operating it\n")
	require.True(t, ok, "README has the section")
	if i := strings.Index(section, "\n## "); i >= 0 {
		section = section[:i]
	}
	blocks := map[string][]string{}
	for _, m := range regexp.MustCompile("(?s)```([a-z]+)\n(.*?)```").FindAllStringSubmatch(section, -1) {
		blocks[m[1]] = append(blocks[m[1]], m[2])
	}
	return section, blocks
}

func TestReadmeOperating(t *testing.T) {
	t.Parallel()
	section, blocks := operatingSection(t)
	cfg := defaultConfig()

	// Every c2cvia command line names flags its command has.
	commandLine := regexp.MustCompile(`c2cvia (serve|inspect|purge|backup|net)\b([^#\n]*)`)
	lines := commandLine.FindAllStringSubmatch(section, -1)
	require.NotEmpty(t, lines)
	for _, m := range lines {
		fs := commandFlags(t, m[1])
		for _, word := range strings.Fields(m[2]) {
			if name, ok := strings.CutPrefix(word, "--"); ok {
				name, _, _ = strings.Cut(name, "=")
				assert.NotNil(t, fs.Lookup(name), "%q: %s has no --%s", m[0], m[1], name)
			}
		}
	}

	// The unit override: serve on loopback, trusting the proxy there.
	require.Len(t, blocks["ini"], 1)
	exec := regexp.MustCompile(`(?m)^ExecStart=/usr/local/bin/c2cvia serve (.*)$`).FindStringSubmatch(blocks["ini"][0])
	require.NotNil(t, exec)
	served, err := parseServeConfig(strings.Fields(exec[1]))
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:8080", served.Addr)
	require.Len(t, served.TrustProxy, 1)
	assert.Equal(t, "127.0.0.1/32", served.TrustProxy[0].String())

	// nginx: to that address, unbuffered, a read timeout above --max-wait,
	// bodies up to --max-body, the client's address appended, /metrics local.
	require.Len(t, blocks["nginx"], 1)
	nginx := blocks["nginx"][0]
	assert.Equal(t, 2, strings.Count(nginx, "proxy_pass http://"+served.Addr+";"))
	assert.Contains(t, nginx, "proxy_buffering off;")
	assert.Contains(t, nginx, "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;")
	timeout := regexp.MustCompile(`proxy_read_timeout (\d+)s;`).FindStringSubmatch(nginx)
	require.NotNil(t, timeout)
	secs, _ := strconv.Atoi(timeout[1])
	assert.Greater(t, time.Duration(secs)*time.Second, cfg.MaxWait)
	size := regexp.MustCompile(`client_max_body_size (\d+)m;`).FindStringSubmatch(nginx)
	require.NotNil(t, size)
	mb, _ := strconv.Atoi(size[1])
	assert.Greater(t, int64(mb)<<20, cfg.MaxBody)
	assert.Regexp(t, `location /metrics \{[^}]*allow 127\.0\.0\.1;\s*deny all;`, nginx)

	// Caddy: to the same address, flushing at once, /metrics refused.
	require.Len(t, blocks["caddy"], 1)
	caddy := blocks["caddy"][0]
	assert.Contains(t, caddy, "reverse_proxy "+served.Addr+" {")
	assert.Contains(t, caddy, "flush_interval -1")
	assert.Contains(t, caddy, "@metrics path /metrics")

	// Restoring and rolling back stop the relay before the store is
	// replaced, and put its WAL away.
	for _, sh := range blocks["sh"] {
		if !strings.Contains(sh, "c2cvia.db-wal") {
			continue
		}
		stopAt, walAt := strings.Index(sh, "systemctl stop c2cvia"), strings.Index(sh, "rm -f /var/lib/c2cvia/c2cvia.db-wal")
		replaceAt := strings.Index(sh, "/var/lib/c2cvia/c2cvia.db\n")
		assert.True(t, stopAt >= 0 && stopAt < walAt && walAt < replaceAt, "stop, remove the WAL, then replace:\n%s", sh)
	}
}

// TestReadmeOperatingCommands pastes the section's backup, purge and net
// lines into bash against a serving relay, with the store in a temp folder
// for /var/lib/c2cvia and without sudo.
func TestReadmeOperatingCommands(t *testing.T) {
	t.Parallel()
	readmeSection(t, "## Operating it") // skips without bash, as the other walkthroughs
	_, blocks := operatingSection(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "c2cvia.db")
	base, _ := startRun(t, map[string]string{"C2CVIA_ADDR": "127.0.0.1:0"}, "serve", "--db", db)
	rel := &testRelay{t: t, URL: base}
	rel.pullReqs("demo", testKey, nil)
	tok, _ := rel.login("demo")
	rel.push(tok, map[string]any{"simEndpoint": "/x"})

	var paste []string
	for _, sh := range blocks["sh"] {
		for _, line := range strings.Split(sh, "\n") {
			if strings.HasPrefix(line, "sudo -u c2cvia c2cvia ") && !strings.Contains(line, "before-upgrade") {
				paste = append(paste, line)
			}
		}
	}
	require.Len(t, paste, 4, "backup, purge, net list, net release")
	script := "set -euo pipefail\n" +
		"sudo() { [ \"$1\" = -u ] && shift 2; \"$@\"; }\n" +
		"c2cvia() { C2CVIA_TEST_AS_RELAY=1 \"$C2CVIA_BIN\" \"$@\"; }\n" +
		strings.ReplaceAll(strings.Join(paste, "\n"), "/var/lib/c2cvia/", dir+"/") + "\n"
	cmd := exec.Command("bash", "-c", script)
	cmd.Env = append(os.Environ(), "C2CVIA_BIN="+os.Args[0])
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Regexp(t, `backed up .*c2cvia\.db to .*backup-\d{4}-\d\d-\d\d\.db`, string(out))
	assert.Contains(t, string(out), "would remove 0 requests")
	assert.Regexp(t, `(?m)^demo\s`, string(out))
	assert.Contains(t, string(out), "released demo; 1 pending requests expired")
}
