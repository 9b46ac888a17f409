// The quick loop stays quick: every test that starts a relay of its own
// runs in parallel, but for those that must run alone and say why.

package main

import (
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// relayStarters are the helpers that give a test a relay of its own.
var relayStarters = []string{"newTestRelay(", "startServe(", "startRun(", "startRelayProcess(", "runReadme("}

// mustRunAlone marks a test that may not run in parallel: it checks the
// process's goroutines (goleak), or its bound depends on CPU time.
func mustRunAlone(body string) bool {
	return strings.Contains(body, "goleak.") || strings.Contains(body, "noLeaks(") || strings.Contains(body, "Not in parallel")
}

func TestRelayTestsRunInParallel(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("*_test.go")
	require.NoError(t, err)
	checked := 0
	for _, f := range files {
		src, err := os.ReadFile(f)
		require.NoError(t, err)
		fset := gotoken.NewFileSet()
		file, err := parser.ParseFile(fset, f, src, parser.ParseComments)
		require.NoError(t, err)
		for _, d := range file.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Recv != nil || !strings.HasPrefix(fn.Name.Name, "Test") || fn.Name.Name == "TestMain" {
				continue
			}
			body := string(src[fset.Position(fn.Body.Pos()).Offset:fset.Position(fn.Body.End()).Offset])
			starts := false
			for _, s := range relayStarters {
				starts = starts || strings.Contains(body, s)
			}
			if !starts || mustRunAlone(body) {
				continue
			}
			checked++
			first := ""
			if len(fn.Body.List) > 0 {
				first = string(src[fset.Position(fn.Body.List[0].Pos()).Offset:fset.Position(fn.Body.List[0].End()).Offset])
			}
			assert.Equal(t, "t.Parallel()", first, "%s: %s starts a relay of its own and does not run in parallel", f, fn.Name.Name)
		}
	}
	assert.Greater(t, checked, 100, "the tests that start a relay were found")
}
