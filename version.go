// What this build is: the module version and the VCS revision the go
// command stamped into the binary (debug.ReadBuildInfo), for `c2cvia
// version`, --version and the c2cvia_build_info metric.

package main

import (
	"runtime"
	"runtime/debug"
	"strings"
)

// versionInfo describes the running binary.
type versionInfo struct {
	Version   string // the module version: v1.2.3, a pseudo-version, or "(devel)"
	Revision  string // the VCS commit; "" when the build was not stamped (-buildvcs=false, no git)
	Time      string // the commit's time, RFC 3339; "" with no revision
	Modified  bool   // the working tree had changes the commit does not hold
	GoVersion string // the Go release that built it: go1.26.8
}

// buildVersion reads the build info of this binary. A binary built without
// module support (none today) reports "(unknown)".
func buildVersion() versionInfo {
	v := versionInfo{Version: "(unknown)", GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if bi.Main.Version != "" {
		v.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

// String is the line `c2cvia version` prints:
// "c2cvia v1.2.3 revision 0123abcd… (2026-11-30T10:00:00Z, modified) go1.26.8",
// with "revision unknown" for a build that was not stamped.
func (v versionInfo) String() string {
	var b strings.Builder
	b.WriteString("c2cvia " + v.Version)
	if v.Revision == "" {
		b.WriteString(" revision unknown")
	} else {
		b.WriteString(" revision " + v.Revision)
		var notes []string
		if v.Time != "" {
			notes = append(notes, v.Time)
		}
		if v.Modified {
			notes = append(notes, "modified")
		}
		if len(notes) > 0 {
			b.WriteString(" (" + strings.Join(notes, ", ") + ")")
		}
	}
	b.WriteString(" " + v.GoVersion)
	return b.String()
}
