package noopsrv

import (
	"bytes"
	"go/ast"
	"go/format"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"testing"
)

// optionList returns the elements of the first []grpc.ServerOption literal in
// function fn of file, printed without comments.
func optionList(t *testing.T, file, fn string) []string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, file, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	found := false
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Name.Name != fn || fd.Recv != nil {
			continue
		}
		ast.Inspect(fd, func(n ast.Node) bool {
			cl, ok := n.(*ast.CompositeLit)
			if found || !ok {
				return !found
			}
			at, ok := cl.Type.(*ast.ArrayType)
			if !ok {
				return true
			}
			if sel, ok := at.Elt.(*ast.SelectorExpr); !ok || sel.Sel.Name != "ServerOption" {
				return true
			}
			found = true
			for _, e := range cl.Elts {
				var b bytes.Buffer
				if err := format.Node(&b, fset, e); err != nil {
					t.Fatal(err)
				}
				out = append(out, b.String())
			}
			return false
		})
	}
	if !found {
		t.Fatalf("%s: no []grpc.ServerOption literal in %s; update noopsrv.ServerOptions and this guard together", file, fn)
	}
	return out
}

// TestOptionsMatchServer keeps the floor honest: the no-op server must run
// with extauthz's grpc-go server options.
func TestOptionsMatchServer(t *testing.T) {
	want := optionList(t, filepath.Join("..", "..", "server", "server.go"), "NewGRPCServer")
	got := optionList(t, "noopsrv.go", "ServerOptions")
	if !slices.Equal(got, want) {
		t.Fatalf("noopsrv.ServerOptions differs from server.NewGRPCServer's options; copy them over.\nserver: %q\nnoop:   %q", want, got)
	}
}
