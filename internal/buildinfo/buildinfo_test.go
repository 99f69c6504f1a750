package buildinfo

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	base := Info{Release: Release, ModuleVersion: "(devel)", GoVersion: runtime.Version(), Platform: "linux/amd64"}
	bi := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/igor-mesh/igor-node", Version: "v0.0.0-20260101120000-0123456789ab+dirty"},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
			{Key: "vcs.time", Value: "2026-01-01T12:00:00Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	got := fromBuildInfo(base, bi)
	want := Info{Release: Release, Module: "github.com/igor-mesh/igor-node", ModuleVersion: "v0.0.0-20260101120000-0123456789ab+dirty",
		Revision: "0123456789abcdef0123456789abcdef01234567", Time: "2026-01-01T12:00:00Z", Modified: true,
		GoVersion: "go1.26.8", Platform: "linux/amd64"}
	if got != want {
		t.Fatalf("fromBuildInfo:\n got %+v\nwant %+v", got, want)
	}
	if s := got.String(); s != Release+" (revision 0123456789ab-dirty, go1.26.8 linux/amd64)" {
		t.Fatalf("String() = %q", s)
	}
	long := got.Long()
	for _, w := range []string{"igor-node " + Release + "\n", "revision  0123456789abcdef0123456789abcdef01234567 (modified)\n",
		"module    github.com/igor-mesh/igor-node v0.0.0-", "committed 2026-01-01T12:00:00Z\n", "go        go1.26.8 linux/amd64\n"} {
		if !strings.Contains(long, w) {
			t.Errorf("Long() lacks %q:\n%s", w, long)
		}
	}
}

// Without VCS settings (a build outside a checkout) nothing is invented.
func TestFromBuildInfoWithoutVCS(t *testing.T) {
	got := fromBuildInfo(Info{Release: Release, ModuleVersion: "(devel)", GoVersion: "go1.26.8"}, &debug.BuildInfo{Main: debug.Module{Path: "m"}})
	if got.Revision != "" || got.Modified || got.ModuleVersion != "(devel)" || got.ShortRevision() != "unknown" {
		t.Fatalf("%+v", got)
	}
	if !strings.Contains(got.Long(), "revision  unknown") {
		t.Fatalf("Long() must say the revision is unknown:\n%s", got.Long())
	}
}

func TestReadNeverEmpty(t *testing.T) {
	i := Read()
	if i.Release != Release || i.GoVersion == "" || i.Platform != runtime.GOOS+"/"+runtime.GOARCH || i.ModuleVersion == "" {
		t.Fatalf("Read() = %+v", i)
	}
}
