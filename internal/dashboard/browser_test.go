package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/locus-ssi/locus/internal/testutil"
	"github.com/locus-ssi/locus/services/clms"
)

// chromium is Debian's headless Chromium (make deps installs it).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium-headless-shell", "chromium"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium-headless-shell or chromium on PATH: run `make deps` (apt-get install chromium-headless-shell)")
	return ""
}

// TestBrowserSeesNodeDown drives the dashboard in headless Chromium
// against three daemons on loopback: `locus dashboard` (the command a
// user runs) serves the page; the page shows every node Up; node 3 is
// killed and the page turns it Down within 2 s of the membership's
// Down, without a reload. A screenshot of the page is kept as the
// test's artefact (go test -artifacts).
func TestBrowserSeesNodeDown(t *testing.T) {
	browser := chromium(t)
	bin, err := testutil.LocusBinary(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := &testutil.Daemons{T: t, Bin: bin, Dir: t.TempDir(), Procs: map[int]*exec.Cmd{}, Net: "127.0.84"}
	d.StartUp(t, 3)

	dash := exec.Command(bin, "dashboard", "--listen", "127.0.0.1:0", "--output", "json")
	dash.Env = append(os.Environ(), "LOCUS_ENDPOINT="+d.Socket(1), "LOCUS_CONTEXT=", "HOME="+d.Dir, "XDG_CONFIG_HOME="+d.Dir)
	dash.Stderr = os.Stderr
	out, err := dash.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := dash.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dash.Process.Signal(os.Interrupt); dash.Wait() })
	var started struct{ URL string }
	sc := bufio.NewScanner(out)
	if !sc.Scan() || json.Unmarshal(sc.Bytes(), &started) != nil || started.URL == "" {
		t.Fatalf("locus dashboard printed %q, want {\"url\": ...}", sc.Text())
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.WindowSize(1280, 900))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancel()
	ctx, cancelRun := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelRun()

	if err := chromedp.Do(ctx, chromedp.Navigate(started.URL), chromedp.WaitVisible(chromedp.CSS(`#node-3[data-state="Up"]`))); err != nil {
		t.Fatalf("the page never showed node 3 Up: %v", err)
	}
	ups, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('.node[data-state="Up"]').length`))
	if err != nil || ups != 3 {
		t.Fatalf("the page shows %d nodes Up, want 3", ups)
	}
	bare, _, _ := strings.Cut(started.URL, "?")
	if url, err := chromedp.Run(ctx, chromedp.Location()); err != nil || url != bare {
		t.Errorf("after the token the page is at %q (%v): want %q, the token gone from the address", url, err, bare)
	}
	// A mark on this document: a reload would lose it.
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.locusMark = 1`)); err != nil {
		t.Fatal(err)
	}

	d.Kill(3)
	killed := time.Now()
	wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
	err = chromedp.Do(wctx, chromedp.WaitVisible(chromedp.CSS(`#node-3[data-state="Down"]`)))
	wcancel()
	seen := time.Now()
	if err != nil {
		t.Fatalf("the page did not turn node 3 Down within 60s of its kill: %v", err)
	}
	st, err := d.Status(1)
	if err != nil {
		t.Fatal(err)
	}
	var downAt time.Time
	for _, r := range st.Nodes {
		if r.Node == 3 && r.State == clms.Down {
			downAt = r.Since
		}
	}
	if downAt.IsZero() {
		t.Fatalf("the page says node 3 is Down; node 1 does not: %+v", st.Nodes)
	}
	lag := seen.Sub(downAt)
	t.Logf("node 3 killed; Down committed %.2fs later; on the page %.2fs after the commit (%.2fs after the kill)",
		downAt.Sub(killed).Seconds(), lag.Seconds(), seen.Sub(killed).Seconds())
	if lag > 2*time.Second {
		t.Errorf("node 3 turned Down on the page %v after the membership took it Down, want within 2s", lag)
	}
	if same, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.locusMark === 1`)); err != nil || !same {
		t.Errorf("the page was reloaded (%v)", err)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.ArtifactDir(), "dashboard.png")
	if err := os.WriteFile(p, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", p, len(shot))
}
