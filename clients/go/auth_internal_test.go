package frameseek

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
)

func TestBearerTokenMetadata(t *testing.T) {
	md, err := bearerToken{token: "abc"}.GetRequestMetadata(context.Background())
	if err != nil || md["authorization"] != "Bearer abc" {
		t.Fatalf("metadata %v, %v", md, err)
	}
	if !(bearerToken{requireSecurity: true}).RequireTransportSecurity() {
		t.Error("token does not require TLS by default")
	}
}

func TestSendChunks(t *testing.T) {
	for _, n := range []int{0, 1, 9, 10, 11, 35} {
		data := bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7}, n)[:n]
		var got [][]byte
		err := sendChunks(bytes.NewReader(data), 10, func(b []byte) error {
			got = append(got, b)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if want := (n + 9) / 10; len(got) != want {
			t.Errorf("n=%d: %d chunks, want %d", n, len(got), want)
		}
		var joined []byte
		for i, g := range got {
			if len(g) > 10 || (i < len(got)-1 && len(g) != 10) {
				t.Errorf("n=%d: chunk %d has %d bytes", n, i, len(g))
			}
			joined = append(joined, g...)
		}
		if !bytes.Equal(joined, data) {
			t.Errorf("n=%d: bytes differ", n)
		}
	}
	boom := errors.New("boom")
	err := sendChunks(io.MultiReader(bytes.NewReader(make([]byte, 5)), errReader{boom}), 10, func([]byte) error { return nil })
	if !errors.Is(err, boom) {
		t.Errorf("read error: %v", err)
	}
	var se sendError
	if err := sendChunks(bytes.NewReader(make([]byte, 5)), 10, func([]byte) error { return io.EOF }); !errors.As(err, &se) {
		t.Errorf("send error not marked: %v", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
