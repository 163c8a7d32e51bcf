package frameseek_test

// TLS and bearer tokens with roles against a real `frameseek serve --tls-cert --tls-key
// --auth-tokens` (README "Security"); the certificates are made here with crypto/x509.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	frameseek "github.com/frameseek/frameseek/clients/go"
	pb "github.com/frameseek/frameseek/clients/go/gen/frameseek/v1"
)

var tokens = map[string]string{"reader": "go-reader-token", "writer": "go-writer-token", "admin": "go-admin-token"}

// writeCert signs a certificate for tmpl with parent/parentKey (nil: self-signed) and writes
// name.pem and name.key into dir.
func writeCert(t *testing.T, dir, name string, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for file, block := range map[string]*pem.Block{name + ".pem": {Type: "CERTIFICATE", Bytes: der},
		name + ".key": {Type: "EC PRIVATE KEY", Bytes: keyDER}} {
		if err := os.WriteFile(filepath.Join(dir, file), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func makePKI(t *testing.T) string {
	dir := t.TempDir()
	now := time.Now()
	ca, caKey := writeCert(t, dir, "ca", &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}, nil, nil)
	writeCert(t, dir, "server", &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "server"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames: []string{"localhost"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}, ca, caKey)
	// client certificates for mutual TLS: one the CA signed, one it did not (self-signed)
	client := x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "go client"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	writeCert(t, dir, "client", &client, ca, caKey)
	stranger := client
	stranger.SerialNumber = big.NewInt(4)
	writeCert(t, dir, "stranger", &stranger, nil, nil)
	return dir
}

func writeTokens(t *testing.T, path string) {
	text := ""
	for role, token := range tokens {
		sum := sha256.Sum256([]byte(token))
		text += fmt.Sprintf("[[token]]\nname = %q\nrole = %q\nsha256 = %q\n\n", role+"-go", role, hex.EncodeToString(sum[:]))
	}
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestTLSAndTokenRoles(t *testing.T) {
	if serverAddr == "" {
		t.Skip(skipReason)
	}
	pki := makePKI(t)
	tokenFile := filepath.Join(pki, "tokens.toml")
	writeTokens(t, tokenFile)
	ca := filepath.Join(pki, "ca.pem")
	srv, err := launchServer([]string{"--tls-cert", filepath.Join(pki, "server.pem"), "--tls-key", filepath.Join(pki, "server.key"),
		"--auth-tokens", tokenFile}, frameseek.WithTLSFiles(ca, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.stop()
	ctx := ctxT(t)
	client := func(opts ...frameseek.Option) *frameseek.Client {
		c, err := frameseek.Dial(srv.addr, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	reader := client(frameseek.WithTLSFiles(ca, "", ""), frameseek.WithToken(tokens["reader"]))
	if _, err := reader.Stats(ctx); err != nil {
		t.Fatalf("reader Stats: %v", err)
	}
	_, err = reader.CreateCollection(ctx, "go-sec", &pb.Collection{})
	if frameseek.Code(err) != codes.PermissionDenied || frameseek.ErrorReason(err) != "PERMISSION_DENIED" {
		t.Fatalf("reader CreateCollection: %v (reason %q), want PERMISSION_DENIED", err, frameseek.ErrorReason(err))
	}
	// the variables the CLI reads, through WithEnv
	t.Setenv("FRAMESEEK_TLS_CA", ca)
	t.Setenv("FRAMESEEK_TOKEN", tokens["admin"])
	if _, err := client(frameseek.WithEnv()).CreateCollection(ctx, "go-sec", &pb.Collection{}); err != nil {
		t.Fatalf("admin CreateCollection: %v", err)
	}
	_, err = client(frameseek.WithTLSFiles(ca, "", "")).Stats(ctx)
	if frameseek.Code(err) != codes.Unauthenticated || frameseek.ErrorReason(err) != "UNAUTHENTICATED" {
		t.Fatalf("no token: %v, want UNAUTHENTICATED", err)
	}
	// the native fast path checks the token too
	coll, err := reader.API.GetCollection(ctx, &pb.GetCollectionRequest{Name: frameseek.DefaultCollection})
	if err != nil {
		t.Fatal(err)
	}
	vec := make([]float32, coll.GetDimension())
	vec[0] = 1
	query := &pb.SearchByVectorRequest{Parent: frameseek.DefaultCollection, Vector: vec}
	if _, err := reader.API.SearchByVector(ctx, query); err != nil {
		t.Fatalf("reader SearchByVector: %v", err)
	}
	_, err = client(frameseek.WithTLSFiles(ca, "", ""), frameseek.WithToken("wrong")).API.SearchByVector(ctx, query)
	if frameseek.Code(err) != codes.Unauthenticated {
		t.Fatalf("unknown token SearchByVector: %v, want UNAUTHENTICATED", err)
	}
	// plaintext to the TLS port fails; a file that is not there is reported by Dial
	_, err = client(frameseek.WithInsecure(), frameseek.WithToken(tokens["reader"]), frameseek.WithInsecureToken()).Stats(ctx)
	if frameseek.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext to TLS: %v, want UNAVAILABLE", err)
	}
	if _, err := frameseek.Dial(srv.addr, frameseek.WithTLSFiles(filepath.Join(pki, "missing.pem"), "", "")); err == nil {
		t.Fatal("Dial with a missing CA file succeeded")
	}
}

// A server started with --tls-client-ca admits only clients that present a certificate its CA
// signed (mutual TLS), through the generated API and the native SearchByVector path alike.
func TestMutualTLS(t *testing.T) {
	if serverAddr == "" {
		t.Skip(skipReason)
	}
	pki := makePKI(t)
	ca := filepath.Join(pki, "ca.pem")
	withCert := func(name string) frameseek.Option {
		return frameseek.WithTLSFiles(ca, filepath.Join(pki, name+".pem"), filepath.Join(pki, name+".key"))
	}
	srv, err := launchServer([]string{"--tls-cert", filepath.Join(pki, "server.pem"), "--tls-key", filepath.Join(pki, "server.key"),
		"--tls-client-ca", ca}, withCert("client"))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.stop()
	ctx := ctxT(t)
	dial := func(opt frameseek.Option) *frameseek.Client {
		c, err := frameseek.Dial(srv.addr, opt)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	member := dial(withCert("client"))
	if _, err := member.Stats(ctx); err != nil {
		t.Fatalf("client certificate from the CA: %v", err)
	}
	coll, err := member.API.GetCollection(ctx, &pb.GetCollectionRequest{Name: frameseek.DefaultCollection})
	if err != nil {
		t.Fatal(err)
	}
	vec := make([]float32, coll.GetDimension())
	vec[0] = 1
	query := &pb.SearchByVectorRequest{Parent: frameseek.DefaultCollection, Vector: vec}
	if _, err := member.API.SearchByVector(ctx, query); err != nil {
		t.Fatalf("SearchByVector with a client certificate: %v", err)
	}
	for name, opt := range map[string]frameseek.Option{
		"no client certificate":             frameseek.WithTLSFiles(ca, "", ""),
		"a certificate the CA never signed": withCert("stranger"),
	} {
		c := dial(opt)
		if _, err := c.Stats(ctx); frameseek.Code(err) != codes.Unavailable {
			t.Errorf("%s: Stats gave %v, want UNAVAILABLE (handshake refused)", name, err)
		}
		if _, err := c.API.SearchByVector(ctx, query); frameseek.Code(err) != codes.Unavailable {
			t.Errorf("%s: SearchByVector gave %v, want UNAVAILABLE (handshake refused)", name, err)
		}
	}
	if _, err := frameseek.Dial(srv.addr, frameseek.WithTLSFiles(ca, filepath.Join(pki, "client.pem"), "")); err == nil {
		t.Error("Dial with a certificate but no key succeeded")
	}
}
