package envoyconfig

import (
	"fmt"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"
)

// validator collects problems from the PGV, Any-walk and semantic passes.
type validator struct {
	errs  []*FieldError
	warns []*FieldError
}

func (v *validator) errorf(p fieldPath, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{Path: p.String(), Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) warnf(p fieldPath, format string, args ...any) {
	v.warns = append(v.warns, &FieldError{Path: p.String(), Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) run(b *bootstrapv3.Bootstrap) {
	v.pgv(b.ValidateAll(), nil)
	v.walk(b.ProtoReflect(), nil)
	v.semantic(b)
}

// The interfaces every protoc-gen-validate error type implements.
type pgvError interface {
	error
	Field() string
	Reason() string
	Cause() error
}

type pgvMultiError interface {
	error
	AllErrors() []error
}

// pgv flattens a (multi-)error tree from ValidateAll into one FieldError per
// violated rule, with the field path accumulated along the causes.
func (v *validator) pgv(err error, p fieldPath) {
	if err == nil {
		return
	}
	// Type assertions, not errors.As: the tree is walked level by level so
	// that each level contributes its field to the path.
	if multi, ok := err.(pgvMultiError); ok { //nolint:errorlint // see above
		for _, e := range multi.AllErrors() {
			v.pgv(e, p)
		}
		return
	}
	pe, ok := err.(pgvError) //nolint:errorlint // see above
	if !ok {
		v.errorf(p, "%v", err)
		return
	}
	q := append(append(fieldPath{}, p...), goFieldToPath(pe.Field())...)
	switch cause := pe.Cause(); cause.(type) { //nolint:errorlint // see above
	case nil:
		v.errorf(q, "%v", pe)
	case pgvMultiError, pgvError:
		v.pgv(cause, q)
	default:
		v.errorf(q, "%s: %v", pe.Reason(), cause)
	}
}

// walk visits every set field: it warns about deprecated fields and enum
// values and, for every google.protobuf.Any, unpacks the payload, runs its
// PGV rules and walks into it (PGV itself stops at Any).
func (v *validator) walk(m protoreflect.Message, p fieldPath) {
	m.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
		fp := p.field(string(fd.Name()))
		if opts, ok := fd.Options().(*descriptorpb.FieldOptions); ok && opts.GetDeprecated() {
			v.warnf(fp, "field %s is deprecated", fd.FullName())
		}
		switch {
		case fd.IsList():
			l := val.List()
			for i := range l.Len() {
				v.value(fd, l.Get(i), fp.index(i))
			}
		case fd.IsMap():
			val.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				v.value(fd.MapValue(), mv, fp.key(k.String()))
				return true
			})
		default:
			v.value(fd, val, fp)
		}
		return true
	})
}

func (v *validator) value(fd protoreflect.FieldDescriptor, val protoreflect.Value, p fieldPath) {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		v.message(val.Message(), p)
	case protoreflect.EnumKind:
		ev := fd.Enum().Values().ByNumber(val.Enum())
		if ev == nil {
			return // undefined numeric value: PGV's defined_only reports it where it applies
		}
		if opts, ok := ev.Options().(*descriptorpb.EnumValueOptions); ok && opts.GetDeprecated() {
			v.warnf(p, "enum value %s is deprecated", ev.Name())
		}
	}
}

func (v *validator) message(m protoreflect.Message, p fieldPath) {
	a, ok := m.Interface().(*anypb.Any)
	if !ok {
		v.walk(m, p)
		return
	}
	inner, err := a.UnmarshalNew()
	if err != nil {
		v.errorf(p, "cannot unpack %s: %v", a.GetTypeUrl(), err)
		return
	}
	if va, ok := inner.(interface{ ValidateAll() error }); ok {
		v.pgv(va.ValidateAll(), p)
	}
	v.walk(inner.ProtoReflect(), p)
}
