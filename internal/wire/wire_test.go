package wire

import (
	"testing"

	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

func TestEncodedIsSentVerbatim(t *testing.T) {
	want := []byte{0x08, 0x07}
	out, err := Codec(0).Marshal(Encoded(want))
	if err != nil {
		t.Fatal(err)
	}
	if got := out.Materialize(); string(got) != string(want) {
		t.Fatalf("got %x, want %x", got, want)
	}
}

func TestMessagesUseTheProtoCodec(t *testing.T) {
	msg := &rpcstatus.Status{Code: 7, Message: "denied"}
	out, err := Codec(0).Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	var back rpcstatus.Status
	if err := Codec(0).Unmarshal(mem.BufferSlice{mem.SliceBuffer(out.Materialize())}, &back); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&back, msg) {
		t.Fatalf("round trip: got %v, want %v", &back, msg)
	}
	if Codec(0).Name() != "proto" {
		t.Fatalf("name %q: clients ask for proto", Codec(0).Name())
	}
}
