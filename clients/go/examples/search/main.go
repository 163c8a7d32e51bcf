// Command search uploads videos to a frameseek server and searches them by an image.
//
//	go run ./examples/search -server 127.0.0.1:50051 -image frame.jpg movie1.mp4 movie2.mp4
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	frameseek "github.com/frameseek/frameseek/clients/go"
	pb "github.com/frameseek/frameseek/clients/go/gen/frameseek/v1"
)

func main() {
	server := flag.String("server", envOr("FRAMESEEK_SERVER", "127.0.0.1:50051"), "frameseek server host:port")
	image := flag.String("image", "", "image to search for (optional)")
	k := flag.Int("k", 5, "videos to return")
	token := flag.String("token", os.Getenv("FRAMESEEK_TOKEN"), "bearer token (sent only over TLS)")
	useTLS := flag.Bool("tls", false, "connect with TLS")
	flag.Parse()

	opts := []frameseek.Option{frameseek.WithInsecure()}
	if *useTLS {
		opts = []frameseek.Option{frameseek.WithTLS(nil)}
		if *token != "" {
			opts = append(opts, frameseek.WithToken(*token))
		}
	}
	c, err := frameseek.Dial(*server, opts...)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		log.Fatal(err)
	}

	for _, path := range flag.Args() {
		res, err := c.UploadFile(ctx, path, &pb.IngestMetadata{ExternalKey: path})
		if err != nil {
			log.Fatalf("%s: %v (reason %s)", path, err, frameseek.ErrorReason(err))
		}
		v := res.GetVideo()
		fmt.Printf("%-40s %s  %.1f s  %d samples  already=%v\n", path, v.GetName(), v.GetDurationSeconds(), v.GetSampleCount(), res.GetAlreadyExists())
	}
	if *image != "" {
		res, err := c.SearchByImageFile(ctx, *image, "", &pb.SearchOptions{K: int32(*k), MaxMatchesPerVideo: 3})
		if err != nil {
			log.Fatalf("search: %v (reason %s)", err, frameseek.ErrorReason(err))
		}
		for _, h := range res.GetHits() {
			fmt.Printf("%.3f  %s (%s)", h.GetScore(), h.GetVideo().GetName(), h.GetVideo().GetExternalKey())
			for _, m := range h.GetMatches() {
				fmt.Printf("  @%.1fs", m.GetTimestampSeconds())
			}
			fmt.Println()
		}
	}
	n := 0
	for v, err := range c.Videos(ctx, nil) {
		if err != nil {
			log.Fatal(err)
		}
		n++
		_ = v
	}
	fmt.Printf("%d videos in the default collection\n", n)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
