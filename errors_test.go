// The store speaks its own errors and the HTTP edge maps them in one table.

package main

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// storeFiles hold the store: SQLite, its caches and counts, and the
// commands that only open a store (purge, inspect).
var storeFiles = []string{"db.go", "writer.go", "tokens.go", "requests.go", "messages.go", "msgcache.go",
	"counts.go", "status.go", "purge.go", "inspect.go"}

// TestStoreKnowsNoHTTP: no store file imports net/http or the metrics
// library, or names an HTTP error, the gateway's sender or a metrics type.
func TestStoreKnowsNoHTTP(t *testing.T) {
	t.Parallel()
	banned := map[string]bool{"apiError": true, "badRequest": true, "newAPIError": true, "writeError": true,
		"viaPeer": true, "metrics": true, "poller": true, "hub": true}
	for _, f := range storeFiles {
		file, err := parser.ParseFile(gotoken.NewFileSet(), f, nil, 0)
		require.NoError(t, err)
		for _, imp := range file.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			assert.False(t, path == "net/http" || strings.Contains(path, "prometheus"), "%s imports %s", f, path)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			if id, ok := n.(*ast.Ident); ok {
				assert.False(t, banned[id.Name], "%s names %s", f, id.Name)
			}
			return true
		})
	}
}

// storeSentinels are the errors db.go declares for the store.
func storeSentinels(t *testing.T) []string {
	t.Helper()
	file, err := parser.ParseFile(gotoken.NewFileSet(), "db.go", nil, 0)
	require.NoError(t, err)
	var names []string
	for _, d := range file.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != gotoken.VAR {
			continue
		}
		for _, s := range g.Specs {
			for _, n := range s.(*ast.ValueSpec).Names {
				if strings.HasPrefix(n.Name, "err") {
					names = append(names, n.Name)
				}
			}
		}
	}
	return names
}

// TestStoreErrorsTable: every store error, wrapped or not, reaches the
// client through the one table with its own code; anything else is a
// relay fault, answered 500 internal with no detail.
func TestStoreErrorsTable(t *testing.T) {
	t.Parallel()
	declared := storeSentinels(t)
	require.Len(t, storeErrors, len(declared), "the table has a row for each store error: %v", declared)
	codes := map[string]bool{}
	for _, se := range storeErrors {
		api := asAPIError(fmt.Errorf("lease rid x: %w", se.err))
		require.NotNil(t, api, "%v", se.err)
		assert.Same(t, se.api, api, "%v", se.err)
		assert.False(t, codes[api.Code], "code %s given twice", api.Code)
		codes[api.Code] = true

		w := httptest.NewRecorder()
		writeError(w, httptest.NewRequest(http.MethodGet, "/x", nil), discardLogger(), se.err)
		assert.Equal(t, api.Status, w.Code, "%v", se.err)
		assert.Contains(t, w.Body.String(), `"code":"`+api.Code+`"`)
	}
	assert.Nil(t, asAPIError(errors.New("disk I/O error")))
	w := httptest.NewRecorder()
	writeError(w, httptest.NewRequest(http.MethodGet, "/x", nil), discardLogger(), errors.New("disk I/O error at page 7"))
	assert.Equal(t, http.StatusInternalServerError, w.Code)
	assert.NotContains(t, w.Body.String(), "page 7", "5xx details go to the log")
}
