package check

import (
	"encoding/base64"
	"strconv"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/extauthz/extauthz/internal/policy"
)

// protoValue is the OPA value the OPA-Envoy plugin makes of a message
// (its envoyauth.protomap, then ast.InterfaceToValue), built directly: no
// map[string]any in between. The plugin's conversion, which the golden
// inputs in testdata/opaenvoy pin down:
//
//   - the fields set (protoreflect's Range: proto3 scalars that are not
//     zero, messages that are set, maps and lists that are not empty),
//     named by their JSON names (lowerCamelCase);
//   - a google.protobuf.Struct is its AsMap (numbers as float64); every
//     other message, well-known types included, is an object of its fields:
//     a Timestamp is {"seconds": s, "nanos": n}, an Any {"typeUrl": …,
//     "value": base64};
//   - integers and enums are numbers (an enum by its number), int64 too;
//     bytes are standard base64 strings; map keys are strings.
func protoValue(m protoreflect.Message) ast.Value {
	if s, ok := m.Interface().(*structpb.Struct); ok {
		return interfaceValue(s.AsMap())
	}
	items := make([][2]*ast.Term, 0, m.Descriptor().Fields().Len())
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		items = append(items, [2]*ast.Term{jsonName(fd), ast.NewTerm(protoValue1(fd, v))})
		return true
	})
	return ast.NewObject(items...)
}

// protoValueOf is protoValue of the parts of m that sel can read: the
// fields it names, each as sel's child says; any other field is left out.
func protoValueOf(m protoreflect.Message, sel *policy.InputPaths) ast.Value {
	if sel.All() {
		return protoValue(m)
	}
	if _, ok := m.Interface().(*structpb.Struct); ok {
		return protoValue(m)
	}
	fields := m.Descriptor().Fields()
	items := make([][2]*ast.Term, 0, len(sel.Keys()))
	for name, sub := range sel.Keys() {
		fd := fields.ByJSONName(name)
		if fd == nil || !m.Has(fd) {
			continue
		}
		v := m.Get(fd)
		var x ast.Value
		switch {
		case sub.All(), fd.IsList():
			x = protoValue1(fd, v)
		case fd.IsMap():
			if fd.MapKey().Kind() != protoreflect.StringKind {
				x = protoMap(fd.MapValue(), v.Map())
				break
			}
			mv := v.Map()
			kv := make([][2]*ast.Term, 0, len(sub.Keys()))
			for k, ksub := range sub.Keys() {
				e := mv.Get(protoreflect.ValueOfString(k).MapKey())
				if !e.IsValid() {
					continue
				}
				var ev ast.Value
				if fd.MapValue().Kind() == protoreflect.MessageKind && !ksub.All() {
					ev = protoValueOf(e.Message(), ksub)
				} else {
					ev = protoField(fd.MapValue(), e)
				}
				kv = append(kv, [2]*ast.Term{ast.StringTerm(k), ast.NewTerm(ev)})
			}
			x = ast.NewObject(kv...)
		case fd.Kind() == protoreflect.MessageKind:
			x = protoValueOf(v.Message(), sub)
		default:
			x = protoField(fd, v)
		}
		items = append(items, [2]*ast.Term{jsonName(fd), ast.NewTerm(x)})
	}
	return ast.NewObject(items...)
}

// protoValue1 is the value of field fd, whatever its cardinality.
func protoValue1(fd protoreflect.FieldDescriptor, v protoreflect.Value) ast.Value {
	switch {
	case fd.IsMap():
		return protoMap(fd.MapValue(), v.Map())
	case fd.IsList():
		l := v.List()
		ts := make([]*ast.Term, l.Len())
		for i := range ts {
			ts[i] = ast.NewTerm(protoField(fd, l.Get(i)))
		}
		return ast.NewArray(ts...)
	}
	return protoField(fd, v)
}

func protoMap(vd protoreflect.FieldDescriptor, m protoreflect.Map) ast.Value {
	items := make([][2]*ast.Term, 0, m.Len())
	m.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
		items = append(items, [2]*ast.Term{ast.StringTerm(k.String()), ast.NewTerm(protoField(vd, v))})
		return true
	})
	return ast.NewObject(items...)
}

// protoField is one value of field fd (a singular value, a list element or
// a map value).
func protoField(fd protoreflect.FieldDescriptor, v protoreflect.Value) ast.Value {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return protoValue(v.Message())
	case protoreflect.StringKind:
		return ast.String(v.String())
	case protoreflect.BoolKind:
		return ast.Boolean(v.Bool())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return ast.Number(strconv.FormatInt(v.Int(), 10))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return ast.Number(strconv.FormatUint(v.Uint(), 10))
	case protoreflect.EnumKind:
		return ast.Number(strconv.FormatInt(int64(v.Enum()), 10))
	case protoreflect.BytesKind:
		b := v.Bytes()
		if b == nil { // encoding/json's null for a nil []byte
			return ast.NullValue
		}
		return ast.String(base64.StdEncoding.EncodeToString(b))
	}
	// float and double: the plugin's own conversion (formatting).
	return interfaceValue(v.Interface())
}

func interfaceValue(x any) ast.Value {
	v, err := ast.InterfaceToValue(x)
	if err != nil { // not reached for the values of a message
		return ast.NullValue
	}
	return v
}

// jsonNames caches a field's JSON name as a term; terms are never changed
// once built, so inputs share them.
var jsonNames sync.Map // protoreflect.FullName → *ast.Term

func jsonName(fd protoreflect.FieldDescriptor) *ast.Term {
	if t, ok := jsonNames.Load(fd.FullName()); ok {
		return t.(*ast.Term)
	}
	t := ast.StringTerm(fd.JSONName())
	jsonNames.Store(fd.FullName(), t)
	return t
}
