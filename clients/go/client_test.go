package frameseek_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	frameseek "github.com/frameseek/frameseek/clients/go"
	pb "github.com/frameseek/frameseek/clients/go/gen/frameseek/v1"
)

func TestDialNeedsTransport(t *testing.T) {
	if _, err := frameseek.Dial("127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "WithInsecure") {
		t.Fatalf("Dial without transport: got %v, want an error naming WithInsecure", err)
	}
}

func TestTokenOverPlaintextNeedsOptIn(t *testing.T) {
	if _, err := frameseek.Dial("127.0.0.1:1", frameseek.WithInsecure(), frameseek.WithToken("s3cret")); err == nil {
		t.Fatal("token over plaintext without WithInsecureToken was accepted")
	}
	c, err := frameseek.Dial("127.0.0.1:1", frameseek.WithInsecure(), frameseek.WithToken("s3cret"), frameseek.WithInsecureToken())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	// TLS + token needs no opt-in.
	c, err = frameseek.Dial("127.0.0.1:1", frameseek.WithTLS(nil), frameseek.WithToken("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestChunkSizeBounds(t *testing.T) {
	for _, n := range []int{0, -1, frameseek.MaxChunkSize + 1} {
		if _, err := frameseek.Dial("127.0.0.1:1", frameseek.WithInsecure(), frameseek.WithChunkSize(n)); err == nil {
			t.Errorf("chunk size %d accepted", n)
		}
	}
}

func TestHealthAndStats(t *testing.T) {
	c := dial(t)
	ctx := ctxT(t)
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.GetVersion() == "" || st.GetUptimeSeconds() <= 0 || st.GetSimdLevel() == "" {
		t.Errorf("stats incomplete: %v", st)
	}
}

// A server that ignores tokens still answers calls that carry one.
func TestCallsWithToken(t *testing.T) {
	c := dial(t, frameseek.WithToken("tok-123"), frameseek.WithInsecureToken())
	if _, err := c.Stats(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

func TestCollectionsPaginationAndErrors(t *testing.T) {
	c := dial(t)
	ctx := ctxT(t)
	ids := []string{"go-pages-a", "go-pages-b", "go-pages-c", "go-pages-d", "go-pages-e"}
	for _, id := range ids {
		col, err := c.CreateCollection(ctx, id, &pb.Collection{Description: "go test " + id})
		if err != nil {
			t.Fatal(err)
		}
		if col.GetName() != "collections/"+id || col.GetDimension() <= 0 {
			t.Fatalf("created %v", col)
		}
	}
	t.Cleanup(func() {
		for _, id := range ids {
			_ = c.DeleteCollection(context.Background(), "collections/"+id, true)
		}
	})
	_, err := c.CreateCollection(ctx, ids[0], nil)
	if frameseek.Code(err) != codes.AlreadyExists || frameseek.ErrorReason(err) != "COLLECTION_EXISTS" {
		t.Fatalf("duplicate create: %v (reason %q)", err, frameseek.ErrorReason(err))
	}
	var names []string
	for col, err := range c.Collections(ctx, 2) { // 2 per page: several pages
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, col.GetName())
	}
	if !slices.IsSorted(names) {
		t.Errorf("collections not in name order: %v", names)
	}
	if len(slices.Compact(slices.Clone(names))) != len(names) {
		t.Errorf("duplicates across pages: %v", names)
	}
	for _, want := range append([]string{"default"}, ids...) {
		if !slices.Contains(names, "collections/"+want) {
			t.Errorf("collections/%s missing from %v", want, names)
		}
	}
	// Breaking out of the loop early must be fine.
	n := 0
	for range c.Collections(ctx, 2) {
		n++
		break
	}
	if n != 1 {
		t.Errorf("early break yielded %d", n)
	}
	if err := c.DeleteCollection(ctx, "collections/"+ids[4], false); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetCollection(ctx, "collections/"+ids[4])
	if frameseek.Code(err) != codes.NotFound || frameseek.ErrorReason(err) != "COLLECTION_NOT_FOUND" {
		t.Fatalf("get deleted: %v (reason %q)", err, frameseek.ErrorReason(err))
	}
	info, ok := frameseek.ErrorInfo(err)
	if !ok || info.GetDomain() != frameseek.ErrorDomain {
		t.Errorf("ErrorInfo %v", info)
	}
	err = c.DeleteCollection(ctx, frameseek.DefaultCollection, true)
	if frameseek.Code(err) != codes.FailedPrecondition || frameseek.ErrorReason(err) != "DEFAULT_COLLECTION" {
		t.Errorf("delete default: %v", err)
	}
	// An error mid-iteration is yielded once, then iteration stops.
	var errs int
	for v, err := range c.Videos(ctx, &pb.ListVideosRequest{Parent: "collections/no-such-collection"}) {
		if err == nil {
			t.Fatalf("video %v from a missing collection", v)
		}
		errs++
	}
	if errs != 1 {
		t.Errorf("%d errors yielded", errs)
	}
}

func TestVectorSearchValidation(t *testing.T) {
	c := dial(t)
	ctx := ctxT(t)
	col, err := c.GetCollection(ctx, frameseek.DefaultCollection)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.SearchByVector(ctx, make([]float32, col.GetDimension()+1), "", nil)
	if frameseek.Code(err) != codes.InvalidArgument || frameseek.ErrorReason(err) != "DIMENSION_MISMATCH" {
		t.Errorf("wrong dimension: %v (reason %q)", err, frameseek.ErrorReason(err))
	}
	v := make([]float32, col.GetDimension())
	v[0] = float32(math.NaN())
	_, err = c.SearchByVector(ctx, v, "", nil)
	if frameseek.Code(err) != codes.InvalidArgument || frameseek.ErrorReason(err) != "NON_FINITE_VECTOR" {
		t.Errorf("NaN: %v (reason %q)", err, frameseek.ErrorReason(err))
	}
}

func TestUploadRejectsNonMedia(t *testing.T) {
	c := dial(t)
	ctx := ctxT(t)
	_, err := c.Upload(ctx, bytes.NewReader(bytes.Repeat([]byte("not a video "), 50000)), &pb.IngestMetadata{Filename: "junk.mp4"})
	if frameseek.Code(err) != codes.InvalidArgument {
		t.Fatalf("junk upload: %v", err)
	}
	if r := frameseek.ErrorReason(err); r != "NOT_MEDIA" && r != "CORRUPT_MEDIA" {
		t.Errorf("junk upload reason %q", r)
	}
	// The server keeps serving.
	if _, err := c.Stats(ctx); err != nil {
		t.Fatal(err)
	}
}

// embedWithServerModel embeds an image with the server's own Python embedder, as a client with
// "its own encoder of the collection's model" would; skips when the media pipeline is missing.
func embedWithServerModel(t *testing.T, path string) []float32 {
	t.Helper()
	py := filepath.Join(repoRoot, ".venv", "bin", "python")
	script := `import sys, json, av, numpy as np
from frameseek.embed import load_embedder
with av.open(sys.argv[1]) as c:
    frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
print(json.dumps(load_embedder().embed([frame])[0].astype(float).tolist()))`
	out, err := exec.Command(py, "-c", script, path).Output()
	if err != nil {
		t.Skipf("cannot embed with the server's model in Python: %v", err)
	}
	var v []float32
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestUploadSearchDelete(t *testing.T) {
	c := dial(t, frameseek.WithChunkSize(64<<10)) // small chunks: the upload takes many messages
	ctx := ctxT(t)
	const coll = "go-media"
	if _, err := c.CreateCollection(ctx, coll, nil); err != nil {
		t.Fatal(err)
	}
	parent := "collections/" + coll
	t.Cleanup(func() { _ = c.DeleteCollection(context.Background(), parent, true) })

	resA, err := c.UploadFile(ctx, media("a.mp4"), &pb.IngestMetadata{Parent: parent, ExternalKey: "a", Labels: map[string]string{"src": "mandelbrot"}})
	if err != nil {
		if r := frameseek.ErrorReason(err); r == "MODEL_UNAVAILABLE" {
			t.Skipf("server has no embedding model: %v", err)
		}
		t.Fatal(err)
	}
	a := resA.GetVideo()
	st, _ := os.Stat(media("a.mp4"))
	if a.GetSampleCount() <= 0 || math.Abs(a.GetDurationSeconds()-8) > 0.5 || a.GetSizeBytes() != st.Size() || a.GetFilename() != "a.mp4" {
		t.Fatalf("video A: %v", a)
	}
	if resA.GetAlreadyExists() {
		t.Error("first upload reported already_exists")
	}
	again, err := c.UploadFile(ctx, media("a.mp4"), &pb.IngestMetadata{Parent: parent})
	if err != nil {
		t.Fatal(err)
	}
	if !again.GetAlreadyExists() || again.GetVideo().GetName() != a.GetName() {
		t.Errorf("same bytes again: already_exists=%v name=%s want %s", again.GetAlreadyExists(), again.GetVideo().GetName(), a.GetName())
	}
	resB, err := c.UploadFile(ctx, media("b.mp4"), &pb.IngestMetadata{Parent: parent, ExternalKey: "b"})
	if err != nil {
		t.Fatal(err)
	}
	b := resB.GetVideo()

	var listed []string
	for v, err := range c.Videos(ctx, &pb.ListVideosRequest{Parent: parent, PageSize: 1}) {
		if err != nil {
			t.Fatal(err)
		}
		listed = append(listed, v.GetName())
	}
	slices.Sort(listed)
	want := []string{a.GetName(), b.GetName()}
	slices.Sort(want)
	if !slices.Equal(listed, want) {
		t.Errorf("listed %v, want %v", listed, want)
	}

	// A frame grabbed at 3 s finds A at 3 s (±1 s).
	img, err := c.SearchByImageFile(ctx, media("frame_a_3s.png"), parent, &pb.SearchOptions{K: 2, MaxMatchesPerVideo: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(img.GetHits()) == 0 || img.GetHits()[0].GetVideo().GetName() != a.GetName() {
		t.Fatalf("image search: %v", img)
	}
	top := img.GetHits()[0]
	if ts := top.GetMatches()[0].GetTimestampSeconds(); math.Abs(ts-3) > 1 {
		t.Errorf("frame at 3 s found at %.2f s", ts)
	}

	// The same image as a vector (embedded client-side with the same model) gives the same answer.
	t.Run("vector", func(t *testing.T) {
		vec := embedWithServerModel(t, media("frame_a_3s.png"))
		res, err := c.SearchByVector(ctx, vec, parent, &pb.SearchOptions{K: 2, MaxMatchesPerVideo: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.GetHits()) == 0 || res.GetHits()[0].GetVideo().GetName() != a.GetName() {
			t.Fatalf("vector search: %v", res)
		}
		if d := math.Abs(float64(res.GetHits()[0].GetScore() - top.GetScore())); d > 1e-3 {
			t.Errorf("vector score %.4f vs image score %.4f", res.GetHits()[0].GetScore(), top.GetScore())
		}
	})

	// A re-encoded, rescaled sub-clip starting at 2 s finds A with offset ≈ +2 s.
	vid, err := c.SearchByVideoFile(ctx, media("clip_a_2s.mp4"), &pb.VideoQuery{Parent: parent, K: 2})
	if err != nil {
		if frameseek.Code(err) == codes.Unimplemented || frameseek.Code(err) == codes.FailedPrecondition {
			t.Skipf("video search not available on this server: %v", err)
		}
		t.Fatal(err)
	}
	if len(vid.GetMatches()) == 0 || vid.GetMatches()[0].GetVideo().GetName() != a.GetName() {
		t.Fatalf("video search: %v", vid)
	}
	if off := vid.GetMatches()[0].GetOffsetSeconds(); math.Abs(off-2) > 1 {
		t.Errorf("offset %.2f s, want ≈ 2 s", off)
	}

	// Delete: gone from get and from search.
	if err := c.DeleteVideo(ctx, a.GetName()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetVideo(ctx, a.GetName()); frameseek.Code(err) != codes.NotFound {
		t.Errorf("get deleted video: %v", err)
	}
	img, err = c.SearchByImageFile(ctx, media("frame_a_3s.png"), parent, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range img.GetHits() {
		if h.GetVideo().GetName() == a.GetName() {
			t.Errorf("deleted video still found: %v", h)
		}
	}
	fmt.Fprintf(os.Stderr, "upload/search/delete: A=%s (%d samples), B=%s\n", a.GetName(), a.GetSampleCount(), b.GetName())
}

func TestIngestJobWatchAndImage(t *testing.T) {
	c := dial(t)
	ctx := ctxT(t)
	const coll = "go-jobs"
	if _, err := c.CreateCollection(ctx, coll, nil); err != nil {
		t.Fatal(err)
	}
	parent := "collections/" + coll
	t.Cleanup(func() { _ = c.DeleteCollection(context.Background(), parent, true) })

	res, err := c.UploadFile(ctx, media("b.mp4"), &pb.IngestMetadata{Parent: parent, ReturnJob: true})
	if frameseek.ErrorReason(err) == "MODEL_UNAVAILABLE" {
		t.Skipf("server has no embedding model: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if res.GetJob().GetName() == "" {
		t.Fatalf("no job in %v", res)
	}
	var states []pb.IngestJobState
	var last *pb.IngestJob
	for job, err := range c.WatchIngestJob(ctx, res.GetJob().GetName()) {
		if err != nil {
			t.Fatal(err)
		}
		states = append(states, job.GetState())
		last = job
	}
	if last == nil || last.GetState() != pb.IngestJobState_INGEST_JOB_STATE_SUCCEEDED || last.GetVideo() == "" {
		t.Fatalf("watch ended with %v (states %v)", last, states)
	}
	v, err := c.GetVideo(ctx, last.GetVideo())
	if err != nil || v.GetSampleCount() <= 0 {
		t.Fatalf("video of the job: %v, %v", v, err)
	}

	png, err := os.ReadFile(media("frame_a_3s.png"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := c.IngestImage(ctx, png, &pb.IngestMetadata{Parent: parent, ExternalKey: "still"})
	if err != nil {
		t.Fatal(err)
	}
	if img.GetVideo().GetKind() != pb.MediaKind_MEDIA_KIND_IMAGE || img.GetVideo().GetSampleCount() != 1 {
		t.Errorf("image item: %v", img.GetVideo())
	}
}
