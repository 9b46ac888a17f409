// Version: `c2cvia version`, --version and c2cvia_build_info say which
// build runs, from the build info the go command stamps.

package main

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestVersionInProcess(t *testing.T) {
	t.Parallel()
	want := buildVersion().String() + "\n"
	assert.True(t, strings.HasPrefix(want, "c2cvia "), want)
	assert.True(t, strings.HasSuffix(want, " "+runtime.Version()+"\n"), want)
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, err := runCLI(t, nil, args...)
		require.NoError(t, err)
		assert.Equal(t, want, out, "%v", args)
	}

	r := newTestRelay(t)
	v := buildVersion()
	m := r.scrape()
	assert.Equal(t, 1.0, m[`c2cvia_build_info{goversion="`+v.GoVersion+`",revision="`+v.Revision+`",version="`+v.Version+`"}`], "%v", m)
}

// TestVersionBuilt builds the binary as a user would, in this checkout, and
// asks it: it names the commit checked out, or says the revision is unknown
// where the build could not stamp one (no git, no repository).
func TestVersionBuilt(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "c2cvia")
	args := []string{"build", "-buildvcs=auto", "-o", bin}
	if raceEnabled {
		args = append(args, "-race") // the test build's cache serves it
	}
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	require.NoError(t, err, "%s", out)

	got, err := exec.Command(bin, "version").Output()
	require.NoError(t, err)
	flag, err := exec.Command(bin, "--version").Output()
	require.NoError(t, err)
	assert.Equal(t, string(got), string(flag), "--version prints the same")
	assert.Regexp(t, `^c2cvia (v\S+|\(devel\)) revision `, string(got))
	assert.True(t, strings.HasSuffix(string(got), " "+runtime.Version()+"\n"), "%s", got)

	// What the build recorded decides: go stamps the revision when it can
	// read the checkout's VCS (not, here, in every git worktree).
	info, err := exec.Command("go", "version", "-m", bin).Output()
	require.NoError(t, err)
	stamped := regexp.MustCompile(`(?m)^\s+build\s+vcs\.revision=(\S+)$`).FindSubmatch(info)
	if stamped == nil {
		assert.Contains(t, string(got), "revision unknown", "the build recorded no revision:\n%s", info)
		return
	}
	assert.Contains(t, string(got), "revision "+string(stamped[1]), "the revision the build recorded")
	if head, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
		assert.Equal(t, strings.TrimSpace(string(head)), string(stamped[1]), "the commit checked out")
	}
}
