package client_test

import (
	"go/ast"
	"go/doc"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestExamplesCoverAPI: go doc shows a runnable example (one with an
// Output comment, so go test runs it) for every function of the package,
// every method of Session but its accessors, and Error.Is, which shows
// the sentinels.
func TestExamplesCoverAPI(t *testing.T) {
	t.Parallel()
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi os.FileInfo) bool { return true }, parser.ParseComments)
	require.NoError(t, err)
	var entries []string
	var tests []*ast.File
	for name, pkg := range pkgs {
		for file, f := range pkg.Files {
			if strings.HasSuffix(file, "_test.go") {
				if name == "client_test" {
					tests = append(tests, f)
				}
				continue
			}
			for _, d := range f.Decls {
				fn, ok := d.(*ast.FuncDecl)
				if !ok || !fn.Name.IsExported() {
					continue
				}
				switch recv := receiver(fn); {
				case recv == "":
					entries = append(entries, fn.Name.Name)
				case recv == "Session" && !accessors[fn.Name.Name]:
					entries = append(entries, "Session_"+fn.Name.Name)
				}
			}
		}
	}
	entries = append(entries, "Error_Is")
	runnable := map[string]bool{}
	for _, ex := range doc.Examples(tests...) {
		if ex.Output != "" || ex.EmptyOutput {
			name, _, _ := strings.Cut(ex.Name, "_")
			if strings.HasPrefix(ex.Name, "Session_") || strings.HasPrefix(ex.Name, "Error_") {
				parts := strings.SplitN(ex.Name, "_", 3)
				name = parts[0] + "_" + parts[1]
			}
			runnable[name] = true
		}
	}
	require.Contains(t, entries, "Serve")
	for _, e := range entries {
		assert.True(t, runnable[e], "no runnable Example%s", e)
	}
}

// accessors are the Session methods that only return a field.
var accessors = map[string]bool{"Token": true, "PeerID": true, "ExpiresAt": true}

func receiver(fn *ast.FuncDecl) string {
	if fn.Recv == nil || len(fn.Recv.List) == 0 {
		return ""
	}
	typ := fn.Recv.List[0].Type
	if star, ok := typ.(*ast.StarExpr); ok {
		typ = star.X
	}
	if id, ok := typ.(*ast.Ident); ok {
		return id.Name
	}
	return "?"
}
