package frameseek_test

// Test harness: TestMain starts one real frameseek server (the Python package in the repo's
// .venv, built by `make setup`) on a free loopback port with a fresh data directory, and every
// test that needs it talks to it. Without the venv the server tests skip with the reason.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	frameseek "github.com/frameseek/frameseek/clients/go"
)

var (
	serverAddr    string // host:port of the running test server, "" when none
	skipReason    string // why there is no server
	repoRoot      string
	mediaDir      string // small media made with ffmpeg for the tests
	serverLogPath string
)

func findRepoRoot() (string, error) {
	if r := os.Getenv("FRAMESEEK_REPO_ROOT"); r != "" {
		return filepath.Abs(r)
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "proto", "frameseek", "v1")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("repo root not found above the working directory")
		}
		dir = parent
	}
}

// startServer checks that a server can run here (else skipReason says why), then starts the
// suite's plaintext server on loopback.
func startServer() (stop func(), err error) {
	exe := filepath.Join(repoRoot, ".venv", "bin", "frameseek")
	if _, err := os.Stat(exe); err != nil {
		skipReason = fmt.Sprintf("no frameseek server at %s (run `make setup` at the repo root)", exe)
		return func() {}, nil
	}
	// The same precondition as the Python server tests (tests/server/helpers.py needs_index): on a
	// branch without the native index the server cannot start, which is not this suite's failure.
	probe := exec.Command(filepath.Join(repoRoot, ".venv", "bin", "python"), "-c",
		"import frameseek._native as n, sys; sys.exit(0 if hasattr(n, 'HnswIndex') else 3)")
	if err := probe.Run(); err != nil {
		skipReason = fmt.Sprintf("frameseek._native.HnswIndex is not built in %s/.venv (%v): the server cannot start", repoRoot, err)
		return func() {}, nil
	}
	srv, err := launchServer(nil, frameseek.WithInsecure())
	if err != nil {
		return nil, err
	}
	serverAddr, serverLogPath = srv.addr, srv.logPath
	return srv.stop, nil
}

type launched struct {
	addr    string // 127.0.0.1:port
	logPath string
	stop    func()
}

// launchServer runs `frameseek serve` on a free loopback port with a fresh data directory and
// extra arguments, and waits until health (through a client dialled with dialOpts) says SERVING.
// The wait is a hang guard for a server that never comes up, not a performance bound.
func launchServer(extraArgs []string, dialOpts ...frameseek.Option) (*launched, error) {
	exe := filepath.Join(repoRoot, ".venv", "bin", "frameseek")
	dataDir, err := os.MkdirTemp("", "frameseek-go-test-")
	if err != nil {
		return nil, err
	}
	// Port 0 + --port-file: the server binds a free port itself (no race with other processes).
	portFile := filepath.Join(dataDir + ".port")
	args := append([]string{"serve", "--address", "127.0.0.1:0", "--data-dir", dataDir, "--port-file", portFile}, extraArgs...)
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), "FRAMESEEK_METRICS_ADDRESS=") // no fixed metrics port in tests
	logFile, err := os.Create(dataDir + ".log")
	if err != nil {
		return nil, err
	}
	logPath := logFile.Name()
	logText := func() string {
		b, _ := os.ReadFile(logPath)
		if len(b) > 8000 {
			b = b[len(b)-8000:]
		}
		return string(b)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		os.RemoveAll(dataDir)
		os.Remove(portFile)
		logFile.Close()
		os.Remove(logPath)
	}
	var addr string
	for addr == "" {
		if b, err := os.ReadFile(portFile); err == nil && len(bytes.TrimSpace(b)) > 0 {
			addr = "127.0.0.1:" + string(bytes.TrimSpace(b))
			break
		}
		select {
		case err := <-exited:
			os.RemoveAll(dataDir)
			return nil, fmt.Errorf("frameseek serve exited early (%v)\nserver log:\n%s", err, logText())
		case <-time.After(50 * time.Millisecond):
		}
	}
	c, err := frameseek.Dial(addr, dialOpts...)
	if err != nil {
		stop()
		return nil, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ready := make(chan error, 1)
	go func() { ready <- c.WaitReady(ctx) }()
	select {
	case err := <-ready:
		if err != nil {
			stop()
			return nil, fmt.Errorf("%w\nserver log:\n%s", err, logText())
		}
	case err := <-exited:
		os.RemoveAll(dataDir)
		return nil, fmt.Errorf("frameseek serve exited early (%v)\nserver log:\n%s", err, logText())
	}
	return &launched{addr: addr, logPath: logPath, stop: stop}, nil
}

// makeMedia writes the test media with ffmpeg: two distinct synthetic videos, a frame of the
// first (at 3 s) and a re-encoded sub-clip of it (1 s .. 5 s).
func makeMedia() error {
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		return fmt.Errorf("ffmpeg not found (make setup installs it): %w", err)
	}
	dir, err := os.MkdirTemp("", "frameseek-go-media-")
	if err != nil {
		return err
	}
	mediaDir = dir
	run := func(args ...string) error {
		cmd := exec.Command("ffmpeg", append([]string{"-hide_banner", "-loglevel", "error", "-y"}, args...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("ffmpeg %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	steps := [][]string{
		{"-f", "lavfi", "-i", "mandelbrot=size=320x240:rate=10", "-t", "8", "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast", "a.mp4"},
		{"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=10", "-t", "5", "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast", "b.mp4"},
		{"-ss", "3", "-i", "a.mp4", "-frames:v", "1", "frame_a_3s.png"},
		{"-ss", "2", "-i", "a.mp4", "-t", "4", "-vf", "scale=288:216", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "30", "clip_a_2s.mp4"},
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			return err
		}
	}
	return nil
}

func TestMain(m *testing.M) {
	var err error
	if repoRoot, err = findRepoRoot(); err != nil {
		fmt.Fprintln(os.Stderr, "frameseek go tests:", err)
		os.Exit(2)
	}
	if err := makeMedia(); err != nil {
		fmt.Fprintln(os.Stderr, "frameseek go tests:", err)
		os.Exit(2)
	}
	stop, err := startServer()
	if err != nil {
		fmt.Fprintln(os.Stderr, "frameseek go tests: starting the server:", err)
		os.Exit(2)
	}
	code := m.Run()
	if code != 0 && serverLogPath != "" {
		fmt.Fprintf(os.Stderr, "--- server log (tail) ---\n%s\n", serverLogText())
	}
	stop()
	os.RemoveAll(mediaDir)
	os.Exit(code)
}

// dial returns a client of the test server, or skips when there is none.
func dial(t *testing.T, opts ...frameseek.Option) *frameseek.Client {
	t.Helper()
	if serverAddr == "" {
		t.Skip(skipReason)
	}
	c, err := frameseek.Dial(serverAddr, append([]frameseek.Option{frameseek.WithInsecure()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}

func media(name string) string { return filepath.Join(mediaDir, name) }

func serverLogText() string {
	b, _ := os.ReadFile(serverLogPath)
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return string(b)
}
