// Package frameseek is a small Go client for the frameseek gRPC API (frameseek.v1).
//
// It wraps the generated stubs in ./gen/frameseek/v1 (package frameseekv1, usable directly
// through Client.API) with what every caller would otherwise write by hand: dialling with
// insecure/TLS transport and a bearer token, streaming uploads in chunks of at most 1 MiB,
// searches by image, video and vector, and iterators over the paginated List methods.
//
//	c, err := frameseek.Dial("127.0.0.1:50051", frameseek.WithInsecure())
//	if err != nil { ... }
//	defer c.Close()
//	res, err := c.UploadFile(ctx, "movie.mp4", nil)
//	hits, err := c.SearchByImageFile(ctx, "frame.jpg", "", &frameseekv1.SearchOptions{K: 5})
//
// Errors are the gRPC status errors the server returns; ErrorReason and ErrorInfo read the
// google.rpc.ErrorInfo the server attaches (reason such as "CORRUPT_MEDIA", domain
// "frameseek.dev").
package frameseek

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pb "github.com/frameseek/frameseek/clients/go/gen/frameseek/v1"
)

// MaxChunkSize is the largest chunk the server accepts in IngestVideo / SearchByVideo streams.
const MaxChunkSize = 1 << 20

// DefaultCollection is the resource name of the server's default collection.
const DefaultCollection = "collections/default"

// Client talks to one frameseek server over one gRPC connection. It is safe for concurrent use.
type Client struct {
	conn *grpc.ClientConn
	// API is the generated stub, for calls and options the wrapper does not cover.
	API pb.FrameSeekClient
	// Health is the standard grpc.health.v1 client of the same connection.
	Health    healthpb.HealthClient
	chunkSize int
}

type options struct {
	transport      credentials.TransportCredentials
	token          string
	insecureToken  bool
	chunkSize      int
	maxRecvMessage int
	extra          []grpc.DialOption
	err            error // from an option that reads files
}

// Option configures Dial.
type Option func(*options)

// WithInsecure uses a plaintext connection (loopback, development, or behind a trusted proxy).
func WithInsecure() Option {
	return func(o *options) { o.transport = insecure.NewCredentials() }
}

// WithTLS uses TLS; a nil config verifies the server against the system roots.
func WithTLS(cfg *tls.Config) Option {
	return func(o *options) {
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		o.transport = credentials.NewTLS(cfg)
	}
}

// WithTLSFiles uses TLS trusting the CA certificates in caFile (PEM; "" = the system roots) and,
// when certFile and keyFile are given, presents that client certificate (a server started with
// --tls-client-ca requires one). Dial reports a file that cannot be read.
func WithTLSFiles(caFile, certFile, keyFile string) Option {
	return func(o *options) {
		cfg, err := tlsConfig(caFile, certFile, keyFile)
		if err != nil {
			o.err = err
			return
		}
		o.transport = credentials.NewTLS(cfg)
	}
}

// WithEnv applies the variables the frameseek CLI reads, where set: FRAMESEEK_TLS_CA,
// FRAMESEEK_CLIENT_CERT and FRAMESEEK_CLIENT_KEY (as WithTLSFiles) and FRAMESEEK_TOKEN (as WithToken).
// Options after it override it.
func WithEnv() Option {
	return func(o *options) {
		ca, cert, key := os.Getenv("FRAMESEEK_TLS_CA"), os.Getenv("FRAMESEEK_CLIENT_CERT"), os.Getenv("FRAMESEEK_CLIENT_KEY")
		if ca != "" || cert != "" || key != "" {
			WithTLSFiles(ca, cert, key)(o)
		}
		if t := os.Getenv("FRAMESEEK_TOKEN"); t != "" {
			o.token = t
		}
	}
}

func tlsConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("frameseek: TLS CA: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("frameseek: TLS CA %s: no PEM certificate in it", caFile)
		}
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("frameseek: a client certificate needs both a certificate and a key file")
	}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("frameseek: client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// WithToken sends "authorization: Bearer <token>" with every call. gRPC refuses to send it over a
// plaintext connection unless WithInsecureToken is also given (a token in clear text is readable
// by anyone on the path).
func WithToken(token string) Option {
	return func(o *options) { o.token = token }
}

// WithInsecureToken allows WithToken on a WithInsecure connection (e.g. a loopback sidecar).
func WithInsecureToken() Option {
	return func(o *options) { o.insecureToken = true }
}

// WithChunkSize sets the upload chunk size (default and maximum MaxChunkSize).
func WithChunkSize(n int) Option {
	return func(o *options) { o.chunkSize = n }
}

// WithMaxReceiveMessageSize raises the client's receive limit (default 64 MiB; large k and
// many matches per video make big SearchResponses).
func WithMaxReceiveMessageSize(n int) Option {
	return func(o *options) { o.maxRecvMessage = n }
}

// WithDialOptions passes extra grpc.DialOptions (interceptors, keepalive, ...).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.extra = append(o.extra, opts...) }
}

// bearerToken implements credentials.PerRPCCredentials.
type bearerToken struct {
	token           string
	requireSecurity bool
}

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (b bearerToken) RequireTransportSecurity() bool { return b.requireSecurity }

// Dial creates a client for target ("host:port" or any gRPC target string). Like grpc.NewClient it
// does not connect until the first call; use WaitReady to block until the server serves.
// One of WithInsecure or WithTLS is required: silently choosing a transport is how plaintext ends
// up on a network.
func Dial(target string, opts ...Option) (*Client, error) {
	o := options{chunkSize: MaxChunkSize, maxRecvMessage: 64 << 20}
	for _, opt := range opts {
		opt(&o)
	}
	if o.err != nil {
		return nil, o.err
	}
	if o.transport == nil {
		return nil, errors.New("frameseek: Dial needs WithInsecure(), WithTLS(cfg) or WithTLSFiles(ca, cert, key)")
	}
	if o.chunkSize <= 0 || o.chunkSize > MaxChunkSize {
		return nil, fmt.Errorf("frameseek: chunk size %d outside 1..%d", o.chunkSize, MaxChunkSize)
	}
	dopts := []grpc.DialOption{
		grpc.WithTransportCredentials(o.transport),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(o.maxRecvMessage)),
	}
	if o.token != "" {
		secure := o.transport.Info().SecurityProtocol != "insecure"
		if !secure && !o.insecureToken {
			return nil, errors.New("frameseek: WithToken over a plaintext connection needs WithInsecureToken()")
		}
		dopts = append(dopts, grpc.WithPerRPCCredentials(bearerToken{token: o.token, requireSecurity: !o.insecureToken}))
	}
	dopts = append(dopts, o.extra...)
	conn, err := grpc.NewClient(target, dopts...)
	if err != nil {
		return nil, fmt.Errorf("frameseek: dial %s: %w", target, err)
	}
	return &Client{conn: conn, API: pb.NewFrameSeekClient(conn), Health: healthpb.NewHealthClient(conn), chunkSize: o.chunkSize}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Conn returns the underlying connection (to build other stubs on it).
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// WaitReady polls the health service until the FrameSeek service reports SERVING (the server
// answers NOT_SERVING while it loads its index) or ctx ends.
func (c *Client) WaitReady(ctx context.Context) error {
	delay := 20 * time.Millisecond
	for {
		res, err := c.Health.Check(ctx, &healthpb.HealthCheckRequest{Service: "frameseek.v1.FrameSeek"})
		if err == nil && res.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("status %s", res.GetStatus())
			}
			return fmt.Errorf("frameseek: server not ready: %w (last: %v)", ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 500*time.Millisecond)
	}
}

// Stats returns server and index statistics.
func (c *Client) Stats(ctx context.Context) (*pb.Stats, error) {
	return c.API.GetStats(ctx, &pb.GetStatsRequest{})
}

// CreateCollection creates collection id with the given settings (nil = server defaults).
func (c *Client) CreateCollection(ctx context.Context, id string, settings *pb.Collection) (*pb.Collection, error) {
	if settings == nil {
		settings = &pb.Collection{}
	}
	return c.API.CreateCollection(ctx, &pb.CreateCollectionRequest{CollectionId: id, Collection: settings})
}

// GetCollection gets a collection by resource name ("collections/{id}").
func (c *Client) GetCollection(ctx context.Context, name string) (*pb.Collection, error) {
	return c.API.GetCollection(ctx, &pb.GetCollectionRequest{Name: name})
}

// DeleteCollection deletes a collection; force also deletes its videos.
func (c *Client) DeleteCollection(ctx context.Context, name string, force bool) error {
	_, err := c.API.DeleteCollection(ctx, &pb.DeleteCollectionRequest{Name: name, Force: force})
	return err
}

// Collections iterates over every collection, fetching pages of pageSize (0 = server default).
// Iteration stops at the first error, which is yielded with a nil collection.
func (c *Client) Collections(ctx context.Context, pageSize int32) iter.Seq2[*pb.Collection, error] {
	return paginate(func(token string) ([]*pb.Collection, string, error) {
		res, err := c.API.ListCollections(ctx, &pb.ListCollectionsRequest{PageSize: pageSize, PageToken: token})
		return res.GetCollections(), res.GetNextPageToken(), err
	})
}

// Videos iterates over the videos a ListVideosRequest selects (its PageToken is managed here).
// A nil request lists the default collection.
func (c *Client) Videos(ctx context.Context, req *pb.ListVideosRequest) iter.Seq2[*pb.Video, error] {
	base := &pb.ListVideosRequest{}
	if req != nil {
		base = cloneMsg(req)
	}
	return paginate(func(token string) ([]*pb.Video, string, error) {
		base.PageToken = token
		res, err := c.API.ListVideos(ctx, base)
		return res.GetVideos(), res.GetNextPageToken(), err
	})
}

// paginate turns a page fetcher into an iterator; it stops after the page with no next token.
func paginate[T any](fetch func(token string) ([]T, string, error)) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		token := ""
		for {
			items, next, err := fetch(token)
			if err != nil {
				var zero T
				yield(zero, err)
				return
			}
			for _, it := range items {
				if !yield(it, nil) {
					return
				}
			}
			if next == "" {
				return
			}
			token = next
		}
	}
}

// GetVideo gets a video by resource name.
func (c *Client) GetVideo(ctx context.Context, name string) (*pb.Video, error) {
	return c.API.GetVideo(ctx, &pb.GetVideoRequest{Name: name})
}

// DeleteVideo deletes a video; it is gone from every search when this returns.
func (c *Client) DeleteVideo(ctx context.Context, name string) error {
	_, err := c.API.DeleteVideo(ctx, &pb.DeleteVideoRequest{Name: name})
	return err
}

// Upload ingests the media read from r: one metadata message, then chunks of at most the
// configured chunk size. meta may be nil (default collection). It returns when the video is
// durably indexed (or, with meta.ReturnJob, when the upload is stored).
func (c *Client) Upload(ctx context.Context, r io.Reader, meta *pb.IngestMetadata) (*pb.IngestVideoResponse, error) {
	if meta == nil {
		meta = &pb.IngestMetadata{}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // aborts the stream if we return early on a read error
	stream, err := c.API.IngestVideo(ctx)
	if err != nil {
		return nil, err
	}
	return streamFile(r, c.chunkSize, stream.CloseAndRecv,
		func() error {
			return stream.Send(&pb.IngestVideoRequest{Payload: &pb.IngestVideoRequest_Metadata{Metadata: meta}})
		},
		func(b []byte) error {
			return stream.Send(&pb.IngestVideoRequest{Payload: &pb.IngestVideoRequest_Chunk{Chunk: b}})
		})
}

// UploadFile ingests a file; meta.Filename and meta.SizeBytes default to the file's name and size.
func (c *Client) UploadFile(ctx context.Context, path string, meta *pb.IngestMetadata) (*pb.IngestVideoResponse, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if meta == nil {
		meta = &pb.IngestMetadata{}
	} else {
		meta = cloneMsg(meta)
	}
	if meta.Filename == "" {
		meta.Filename = filepath.Base(path)
	}
	if meta.SizeBytes == 0 {
		meta.SizeBytes = st.Size()
	}
	return c.Upload(ctx, f, meta)
}

// IngestImage ingests an encoded still image as a one-sample item.
func (c *Client) IngestImage(ctx context.Context, image []byte, meta *pb.IngestMetadata) (*pb.IngestVideoResponse, error) {
	return c.API.IngestImage(ctx, &pb.IngestImageRequest{Metadata: meta, Image: image})
}

// WatchIngestJob yields the job's state at once and then every change, until a terminal state.
func (c *Client) WatchIngestJob(ctx context.Context, name string) iter.Seq2[*pb.IngestJob, error] {
	return func(yield func(*pb.IngestJob, error) bool) {
		stream, err := c.API.WatchIngestJob(ctx, &pb.WatchIngestJobRequest{Name: name})
		if err != nil {
			yield(nil, err)
			return
		}
		for {
			job, err := stream.Recv()
			if err == io.EOF {
				return
			}
			if !yield(job, err) || err != nil {
				return
			}
		}
	}
}

// SearchByImage finds the videos containing an encoded image. parent "" = default collection;
// opts may be nil (server defaults: k=10, 3 timestamps per video).
func (c *Client) SearchByImage(ctx context.Context, image []byte, parent string, opts *pb.SearchOptions) (*pb.SearchResponse, error) {
	return c.API.SearchByImage(ctx, &pb.SearchByImageRequest{Parent: parent, Image: image, Options: opts})
}

// SearchByImageFile reads an image file and calls SearchByImage.
func (c *Client) SearchByImageFile(ctx context.Context, path, parent string, opts *pb.SearchOptions) (*pb.SearchResponse, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return c.SearchByImage(ctx, b, parent, opts)
}

// SearchByVector finds the nearest videos for a raw embedding of the collection's model.
func (c *Client) SearchByVector(ctx context.Context, vector []float32, parent string, opts *pb.SearchOptions) (*pb.SearchResponse, error) {
	return c.API.SearchByVector(ctx, &pb.SearchByVectorRequest{Parent: parent, Vector: vector, Options: opts})
}

// SearchByVideo streams a clip and returns the indexed videos it copies, with aligned segments.
// q may be nil (default collection, server defaults).
func (c *Client) SearchByVideo(ctx context.Context, r io.Reader, q *pb.VideoQuery) (*pb.SearchByVideoResponse, error) {
	if q == nil {
		q = &pb.VideoQuery{}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.API.SearchByVideo(ctx)
	if err != nil {
		return nil, err
	}
	return streamFile(r, c.chunkSize, stream.CloseAndRecv,
		func() error {
			return stream.Send(&pb.SearchByVideoRequest{Payload: &pb.SearchByVideoRequest_Query{Query: q}})
		},
		func(b []byte) error {
			return stream.Send(&pb.SearchByVideoRequest{Payload: &pb.SearchByVideoRequest_Chunk{Chunk: b}})
		})
}

// SearchByVideoFile opens a clip file and calls SearchByVideo.
func (c *Client) SearchByVideoFile(ctx context.Context, path string, q *pb.VideoQuery) (*pb.SearchByVideoResponse, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return c.SearchByVideo(ctx, f, q)
}

// sendError marks a failure of stream.Send (as opposed to reading the input).
// streamFile runs one client-streaming upload: the header message, then r in chunks, then the
// reply. When the server ends the stream early (Send returns io.EOF), its status is the error.
func streamFile[T any](r io.Reader, size int, closeAndRecv func() (T, error), sendHeader func() error,
	sendChunk func([]byte) error) (T, error) {
	var zero T
	if err := sendHeader(); err != nil {
		return zero, closeAndRecvErr(closeAndRecv, err)
	}
	if err := sendChunks(r, size, sendChunk); err != nil {
		var se sendError
		if errors.As(err, &se) {
			return zero, closeAndRecvErr(closeAndRecv, se.err)
		}
		return zero, err
	}
	return closeAndRecv()
}

type sendError struct{ err error }

func (e sendError) Error() string { return e.err.Error() }
func (e sendError) Unwrap() error { return e.err }

// sendChunks reads r in chunks of size bytes and sends each; a fresh buffer per chunk because
// Send may still hold the previous message when it returns.
func sendChunks(r io.Reader, size int, send func([]byte) error) error {
	for {
		buf := make([]byte, size)
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if serr := send(buf[:n]); serr != nil {
				return sendError{serr}
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("frameseek: reading upload: %w", err)
		}
	}
}

// closeAndRecvErr: when Send fails with io.EOF the server has already ended the call; its status
// (the useful error, e.g. INVALID_ARGUMENT) comes from CloseAndRecv.
func closeAndRecvErr[T any](closeAndRecv func() (T, error), sendErr error) error {
	if sendErr == io.EOF {
		if _, err := closeAndRecv(); err != nil {
			return err
		}
	}
	return sendErr
}
