package policy

import (
	"github.com/open-policy-agent/opa/v1/ast"
)

// InputPaths is the part of input a compiled policy can read, found from
// the references to input in its modules: input.a.b["c"] makes a.b.c
// readable as a whole; a reference that goes on with anything but a
// string (input.a[x], input.a[0]), or input used as a value (json.marshal
// (input), f(input.a)), makes that whole document readable. A builder of
// the input may leave out the rest: the policy cannot tell.
type InputPaths struct {
	all bool
	sub map[string]*InputPaths
}

// AllInput is the whole input readable.
func AllInput() *InputPaths { return &InputPaths{all: true} }

// All reports whether the whole document at this point is readable. A nil
// *InputPaths is nothing readable.
func (p *InputPaths) All() bool { return p != nil && p.all }

// Child is what is readable under key: nil for nothing, p itself when p
// is all readable.
func (p *InputPaths) Child(key string) *InputPaths {
	switch {
	case p == nil:
		return nil
	case p.all:
		return p
	}
	return p.sub[key]
}

// Keys are the keys under which something is readable (when not All).
func (p *InputPaths) Keys() map[string]*InputPaths {
	if p == nil {
		return nil
	}
	return p.sub
}

func (p *InputPaths) add(path []string) {
	n := p
	for _, k := range path {
		if n.all {
			return
		}
		if n.sub == nil {
			n.sub = map[string]*InputPaths{}
		}
		c, ok := n.sub[k]
		if !ok {
			c = &InputPaths{}
			n.sub[k] = c
		}
		n = c
	}
	n.all, n.sub = true, nil
}

// inputPaths collects the references to input of the compiled modules.
func inputPaths(c *ast.Compiler) *InputPaths {
	root := &InputPaths{}
	var vis *ast.GenericVisitor
	vis = ast.NewGenericVisitor(func(x any) bool {
		switch x := x.(type) {
		case ast.Ref:
			if !x.HasPrefix(ast.InputRootRef) {
				return false
			}
			var path []string
			i := 1
			for ; i < len(x); i++ {
				s, ok := x[i].Value.(ast.String)
				if !ok {
					break
				}
				path = append(path, string(s))
			}
			root.add(path)
			for _, t := range x[i:] { // the operands that are not part of the path
				vis.Walk(t)
			}
			return true
		case ast.Var:
			if x.Equal(ast.InputRootDocument.Value) { // input as a value
				root.add(nil)
			}
		}
		return false
	})
	for _, m := range c.Modules {
		for _, r := range m.Rules { // imports are resolved into the rules' references
			vis.Walk(r)
		}
	}
	return root
}
