// The deployment files stay true: the systemd unit is hardened and starts
// serve with real flags, and the README's VPS guide names only real flags
// and variables.

package main

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// unitFile is a systemd unit: section -> setting -> values, in order.
type unitFile map[string]map[string][]string

func parseUnit(t *testing.T, path string) unitFile {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			name, value, ok := strings.Cut(line, "=")
			require.True(t, ok, "not name=value: %q", line)
			require.NotEmpty(t, section, "setting before any section: %q", line)
			require.False(t, strings.HasSuffix(line, `\`), "continued lines are not parsed here: %q", line)
			u[section][name] = append(u[section][name], value)
		}
	}
	require.NoError(t, sc.Err())
	return u
}

// one returns the single value of a setting.
func (u unitFile) one(t *testing.T, section, name string) string {
	t.Helper()
	v := u[section][name]
	require.Len(t, v, 1, "[%s] %s", section, name)
	return v[0]
}

// commandFlags returns the flag set of a c2cvia subcommand, as the CLI has it.
func commandFlags(t *testing.T, name string) *pflag.FlagSet {
	t.Helper()
	var cmd *cobra.Command
	switch name {
	case "serve":
		cmd = newServeCmd(io.Discard, io.Discard)
	case "inspect":
		cmd = newInspectCmd(io.Discard)
	case "purge":
		cmd = newPurgeCmd(io.Discard)
	case "backup":
		cmd = newBackupCmd(io.Discard)
	case "net":
		cmd = newNetCmd(nil, io.Discard)
		cmd.Flags().AddFlagSet(cmd.PersistentFlags())
		for _, sub := range cmd.Commands() {
			cmd.Flags().AddFlagSet(sub.Flags())
		}
	default:
		t.Fatalf("no command %q", name)
	}
	fs := cmd.Flags()
	fs.SetOutput(io.Discard)
	return fs
}

// TestSystemdUnit checks deploy/c2cvia.service: the hardening settings, the
// limits, the stop signal, and an ExecStart whose flags serve accepts.
func TestSystemdUnit(t *testing.T) {
	t.Parallel()
	const path = "deploy/c2cvia.service"
	u := parseUnit(t, path)
	svc := u["Service"]
	require.NotNil(t, svc, "[Service]")

	for name, want := range map[string]string{
		"User":                    "c2cvia",
		"StateDirectory":          "c2cvia",
		"StateDirectoryMode":      "0700",
		"UMask":                   "0077",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"NoNewPrivileges":         "yes",
		"CapabilityBoundingSet":   "CAP_NET_BIND_SERVICE",
		"AmbientCapabilities":     "CAP_NET_BIND_SERVICE",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"SystemCallFilter":        "@system-service",
		"SystemCallArchitectures": "native",
		"MemoryDenyWriteExecute":  "yes",
		"Restart":                 "on-failure",
		"KillSignal":              "SIGTERM",
		"LimitNOFILE":             "65536",
	} {
		assert.Equal(t, []string{want}, svc[name], "[Service] %s", name)
	}
	assert.Equal(t, []string{"multi-user.target"}, u["Install"]["WantedBy"])

	// The relay's own shutdown grace is 10 s; systemd must wait longer
	// before SIGKILL.
	stop, err := time.ParseDuration(u.one(t, "Service", "TimeoutStopSec"))
	require.NoError(t, err)
	assert.Greater(t, stop, 10*time.Second, "TimeoutStopSec")

	// ExecStart runs serve with flags it has, the store in the state
	// directory.
	args := strings.Fields(u.one(t, "Service", "ExecStart"))
	require.GreaterOrEqual(t, len(args), 2)
	assert.Equal(t, "/usr/local/bin/c2cvia", args[0])
	require.Equal(t, "serve", args[1])
	fs := commandFlags(t, "serve")
	require.NoError(t, fs.Parse(args[2:]), "ExecStart flags")
	assert.Empty(t, fs.Args(), "ExecStart arguments serve would refuse")
	db, _ := fs.GetString("db")
	assert.Equal(t, "/var/lib/"+u.one(t, "Service", "StateDirectory")+"/c2cvia.db", db, "the store in StateDirectory")
	addr, _ := fs.GetString("addr")
	assert.Equal(t, ":443", addr)

	for _, env := range svc["Environment"] {
		name, _, _ := strings.Cut(env, "=")
		assert.True(t, isServeVariable(t, name), "Environment=%s names no serve flag", env)
	}

	t.Run("systemd-analyze verify", func(t *testing.T) {
		if _, err := exec.LookPath("systemd-analyze"); err != nil {
			t.Skip("systemd-analyze not installed")
		}
		// The binary must exist for verify: the test binary stands in.
		unit, err := os.ReadFile(path)
		require.NoError(t, err)
		exe, err := os.Executable()
		require.NoError(t, err)
		unit = bytes.ReplaceAll(unit, []byte("ExecStart=/usr/local/bin/c2cvia "), []byte("ExecStart="+exe+" "))
		copyPath := filepath.Join(t.TempDir(), "c2cvia.service")
		require.NoError(t, os.WriteFile(copyPath, unit, 0o644))
		out, err := exec.Command("systemd-analyze", "verify", "--man=no", copyPath).CombinedOutput()
		assert.NoError(t, err, "%s", out)
		assert.Empty(t, strings.TrimSpace(string(out)), "systemd-analyze warnings (an unknown setting is only a warning)")
	})
}

// isServeVariable reports whether name is the C2CVIA_* variable of a serve flag.
func isServeVariable(t *testing.T, name string) bool {
	found := false
	commandFlags(t, "serve").VisitAll(func(f *pflag.Flag) {
		if envName(f.Name) == name {
			found = true
		}
	})
	return found
}

// TestReadmeVPS checks the README's "Run it on a VPS": every c2cvia command
// line in it uses flags its command has, every flag named in its text is a
// serve flag, every C2CVIA_* variable belongs to one, and the files it
// installs exist.
func TestReadmeVPS(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(readme), "\n## Run it on a VPS\n")
	require.True(t, ok, "README has the section")
	if i := strings.Index(section, "\n## "); i >= 0 {
		section = section[:i]
	}

	commandLine := regexp.MustCompile("c2cvia (serve|inspect|purge)\\b([^`#\\n]*)")
	inlineFlag := regexp.MustCompile("`(--[a-z0-9-]+)")
	checked := map[string]bool{}
	inFence := false
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inFence = !inFence
			continue
		}
		for _, m := range commandLine.FindAllStringSubmatch(line, -1) {
			fs := commandFlags(t, m[1])
			for _, word := range strings.Fields(m[2]) {
				if !strings.HasPrefix(word, "--") {
					continue
				}
				name, _, _ := strings.Cut(strings.TrimPrefix(word, "--"), "=")
				assert.NotNil(t, fs.Lookup(name), "%q: %s has no --%s", line, m[1], name)
				checked[m[1]+" --"+name] = true
			}
		}
		if inFence {
			continue // other tools' flags (useradd, systemctl)
		}
		for _, m := range inlineFlag.FindAllStringSubmatch(line, -1) {
			name := strings.TrimPrefix(m[1], "--")
			assert.NotNil(t, commandFlags(t, "serve").Lookup(name), "%q: serve has no %s", line, m[1])
			checked["serve --"+name] = true
		}
	}
	for _, name := range regexp.MustCompile(`C2CVIA_[A-Z0-9_]+`).FindAllString(section, -1) {
		assert.True(t, isServeVariable(t, name), "%s names no serve flag", name)
		checked[name] = true
	}
	for _, want := range []string{"serve --addr", "serve --db", "inspect --db", "C2CVIA_ACME_DOMAIN", "C2CVIA_ACME_EMAIL"} {
		assert.True(t, checked[want], "the guide shows %s", want)
	}

	assert.Contains(t, section, "deploy/c2cvia.service")
	_, err = os.Stat("deploy/c2cvia.service")
	assert.NoError(t, err)
	for _, step := range []string{"go build", "systemctl enable", "journalctl", "ufw allow 80", "ufw allow 443", "systemctl restart"} {
		assert.Contains(t, section, step)
	}
}
