// Package buildinfo says which igor-node this is: the release, and what the
// Go toolchain recorded in the binary (module version, VCS revision, Go
// version). `igor-node version`, the igor_build_info metric and host records
// all read it from here.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Release is the igor-node release. It moves with the protocol and the
// on-disk formats, not with every commit: the revision says which commit.
const Release = "0.2.0"

// Info describes the running binary.
type Info struct {
	// Release is the igor-node release (Release).
	Release string `json:"release"`
	// Module is the main module's path and ModuleVersion its version as the
	// go command stamped it: a tag (v1.2.3), a pseudo-version derived from
	// the VCS revision (v0.0.0-20260101120000-abcdef123456, "+dirty" for a
	// modified tree), or "(devel)" when it could not tell.
	Module        string `json:"module"`
	ModuleVersion string `json:"module_version"`
	// Revision is the VCS commit the binary was built from ("" when built
	// outside a checkout or with -buildvcs=false); Time its commit time
	// (RFC 3339); Modified whether the tree had uncommitted changes.
	Revision string `json:"revision,omitempty"`
	Time     string `json:"time,omitempty"`
	Modified bool   `json:"modified"`
	// GoVersion is the toolchain that built the binary (go1.26.8) and
	// Platform the target (linux/amd64).
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"`
}

// Read returns the running binary's build information. It never fails: a
// binary without embedded build information (some test binaries) reports
// "(devel)" and no revision.
func Read() Info {
	info := Info{Release: Release, ModuleVersion: "(devel)", GoVersion: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info
	}
	return fromBuildInfo(info, bi)
}

func fromBuildInfo(info Info, bi *debug.BuildInfo) Info {
	info.Module = bi.Main.Path
	if v := bi.Main.Version; v != "" {
		info.ModuleVersion = v
	}
	if bi.GoVersion != "" {
		info.GoVersion = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.time":
			info.Time = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}

// ShortRevision is the first 12 hex digits of the revision, with "-dirty"
// for a modified tree; "unknown" without a revision.
func (i Info) ShortRevision() string {
	if i.Revision == "" {
		return "unknown"
	}
	r := i.Revision
	if len(r) > 12 {
		r = r[:12]
	}
	if i.Modified {
		r += "-dirty"
	}
	return r
}

// String is the one-line form `igor-node --version` prints:
// "0.2.0 (revision 0123456789ab, go1.26.8 linux/amd64)".
func (i Info) String() string {
	return fmt.Sprintf("%s (revision %s, %s %s)", i.Release, i.ShortRevision(), i.GoVersion, i.Platform)
}

// Long is the multi-line form `igor-node version` prints.
func (i Info) Long() string {
	var b strings.Builder
	fmt.Fprintf(&b, "igor-node %s\n", i.Release)
	if i.Module != "" {
		fmt.Fprintf(&b, "module    %s %s\n", i.Module, i.ModuleVersion)
	}
	rev := i.Revision
	if rev == "" {
		rev = "unknown (built outside a git checkout, or with -buildvcs=false)"
	} else if i.Modified {
		rev += " (modified)"
	}
	fmt.Fprintf(&b, "revision  %s\n", rev)
	if i.Time != "" {
		fmt.Fprintf(&b, "committed %s\n", i.Time)
	}
	fmt.Fprintf(&b, "go        %s %s\n", i.GoVersion, i.Platform)
	return b.String()
}
