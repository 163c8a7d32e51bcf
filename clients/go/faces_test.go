package frameseek_test

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"os"
	"testing"

	"google.golang.org/grpc/codes"

	frameseek "github.com/frameseek/frameseek/clients/go"
	pb "github.com/frameseek/frameseek/clients/go/gen/frameseek/v1"
)

// A real face photo that Debian's opencv-doc ships (make setup installs it).
const facePhoto = "/usr/share/doc/opencv-doc/opencv4/html/230501201_1.jpg"

func flatPNG(t *testing.T) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, 160, 120))
	for i := range img.Pix {
		img.Pix[i] = 128
	}
	img.Set(0, 0, color.Gray{Y: 127})
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestSearchByFaceAndPeople(t *testing.T) {
	c := dial(t)
	ctx := ctxT(t)
	const coll = "go-faces"
	if _, err := c.CreateCollection(ctx, coll, &pb.Collection{Faces: true}); err != nil {
		t.Fatal(err)
	}
	parent := "collections/" + coll
	t.Cleanup(func() { _ = c.DeleteCollection(ctxT(t), parent, true) })
	got, err := c.GetCollection(ctx, parent)
	if err != nil || !got.GetFaces() {
		t.Fatalf("collection with faces: %v, %v", got, err)
	}

	photo, err := os.ReadFile(facePhoto)
	if err != nil {
		t.Fatal(err)
	}
	item, err := c.IngestImage(ctx, photo, &pb.IngestMetadata{Parent: parent, ExternalKey: "man"})
	if frameseek.ErrorReason(err) == "MODEL_UNAVAILABLE" {
		t.Skipf("server has no models: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	stub := pb.NewFrameSeekClient(c.Conn())

	found, err := stub.SearchByFace(ctx, &pb.SearchByFaceRequest{Parent: parent, Image: photo})
	if err != nil {
		t.Fatal(err)
	}
	if len(found.GetResults()) != 1 || len(found.GetResults()[0].GetHits()) != 1 {
		t.Fatalf("one face, one hit expected: %v", found)
	}
	hit := found.GetResults()[0].GetHits()[0]
	if hit.GetVideo().GetName() != item.GetVideo().GetName() || hit.GetScore() <= 0.5 || hit.GetPerson() == "" {
		t.Errorf("hit: %v", hit)
	}

	_, err = stub.SearchByFace(ctx, &pb.SearchByFaceRequest{Parent: parent, Image: flatPNG(t)})
	if frameseek.Code(err) != codes.InvalidArgument || frameseek.ErrorReason(err) != "NO_FACE" {
		t.Errorf("photo without a face: %v (reason %q)", err, frameseek.ErrorReason(err))
	}

	inVideo, err := stub.GetVideoPeople(ctx, &pb.GetVideoPeopleRequest{Name: item.GetVideo().GetName()})
	if err != nil || len(inVideo.GetPeople()) != 1 || inVideo.GetPeople()[0].GetName() != hit.GetPerson() {
		t.Fatalf("people of the photo: %v, %v", inVideo, err)
	}
	named, err := stub.UpdatePerson(ctx, &pb.UpdatePersonRequest{
		Person: &pb.Person{Name: hit.GetPerson(), DisplayName: "Gopher"},
	})
	if err != nil || named.GetDisplayName() != "Gopher" {
		t.Fatalf("update person: %v, %v", named, err)
	}
	listed, err := stub.ListPeople(ctx, &pb.ListPeopleRequest{Parent: parent})
	if err != nil || len(listed.GetPeople()) != 1 || listed.GetPeople()[0].GetDisplayName() != "Gopher" {
		t.Fatalf("list people: %v, %v", listed, err)
	}
	again, err := stub.SearchByFace(ctx, &pb.SearchByFaceRequest{Parent: parent, Image: photo})
	if err != nil || again.GetResults()[0].GetHits()[0].GetPersonDisplayName() != "Gopher" {
		t.Fatalf("display name on a search hit: %v, %v", again, err)
	}
	_, err = stub.UpdatePerson(ctx, &pb.UpdatePersonRequest{
		Person: &pb.Person{Name: parent + "/people/999999", DisplayName: "nobody"},
	})
	if frameseek.Code(err) != codes.NotFound || frameseek.ErrorReason(err) != "PERSON_NOT_FOUND" {
		t.Errorf("unknown person: %v (reason %q)", err, frameseek.ErrorReason(err))
	}
}
