// The page at GET / and the JavaScript SDK in a real browser: headless
// Chromium driven over the DevTools protocol.

package main

import (
	"bytes"
	"context"
	"image/png"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// browserPath finds Chromium. It skips the test when there is none, except
// under CI=true, where a missing browser fails (.ci/run installs Debian's
// chromium).
func browserPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no Chromium on PATH: install Debian's chromium package (.ci/run does)")
	}
	t.Skip("no Chromium on PATH")
	return ""
}

// newBrowser starts headless Chromium with a fresh profile and returns the
// context of its first tab. The browser stops when the test ends, before the
// relay does (cleanups run last-registered first).
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(browserPath(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.WindowSize(1000, 1400),
		// This machine has no network beyond loopback: keep Chromium from calling home.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first Run starts the browser; it must not carry a deadline.
	require.NoError(t, chromedp.Do(ctx), "Chromium did not start")
	return ctx
}

// newTab opens another tab in tab's browser. Like the browser, a tab lives
// as long as the context of its first Run, so that one has no deadline.
func newTab(t *testing.T, tab context.Context) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(tab)
	t.Cleanup(cancel)
	require.NoError(t, chromedp.Do(ctx), "no new tab")
	return ctx
}

// step runs actions in tab with a deadline, so a page that never gets there
// fails the test instead of hanging it.
func step(t *testing.T, tab context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 20*time.Second)
	defer cancel()
	require.NoError(t, chromedp.Do(ctx, actions...), what)
}

// eval runs a script in tab, waits for the promise it returns, and decodes
// the result.
func eval[T any](t *testing.T, tab context.Context, script string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](script, chromedp.EvalAwaitPromise))
	require.NoError(t, err, script)
	return v
}

// TestBrowserPage: tab A turns itself into the SimServer of a net from the
// page, plain net/http reaches it through /via/, tab B calls it through the
// SDK's login().fetch(), and a chat line from B shows up in A's page.
func TestBrowserPage(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	a := newBrowser(t)
	b := newTab(t, a)
	page := r.URL + "/?net=browser-demo"

	// Tab A serves the net, with its own answer.
	step(t, a, "tab A opens the page and starts serving",
		chromedp.Navigate(page),
		chromedp.WaitVisible(chromedp.ID("serve")),
		chromedp.SetValue(chromedp.ID("response"), "<p>tab A answers {path} for {from}</p>"),
		chromedp.Click(chromedp.ID("serve")),
		chromedp.WaitVisible(chromedp.ID("share")),
	)
	shared := eval[string](t, a, `document.getElementById("via-url").href`)
	require.Equal(t, r.URL+"/via/browser-demo/", shared)

	// A plain HTTP client reaches the tab like a web server.
	resp, err := http.Get(shared + "hello%20world?x=1")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	require.Equal(t, "<p>tab A answers /hello world for via</p>", string(body))
	require.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))
	require.Contains(t, resp.Header.Get("Content-Security-Policy"), "sandbox")
	step(t, a, "tab A lists the request it answered",
		chromedp.WaitVisible(chromedp.Search(`//ol[@id="served-log"]/li[contains(., "GET /hello%20world?x=1 from via")]`)))

	// Tab B calls tab A through the SDK, as a SimClient of the net.
	step(t, b, "tab B opens the page", chromedp.Navigate(page),
		chromedp.WaitVisible(chromedp.Search(`//span[@id="me" and string-length(text()) = 6]`)))
	got := eval[map[string]string](t, b, `(async () => {
		const { login } = await import("/sdk/c2cvia.js");
		const session = await login({ net: "browser-demo" });
		const res = await session.fetch("/from-b");
		const out = { status: String(res.status), type: res.headers.get("content-type"),
			body: await res.text(), peer: session.peerId };
		session.close();
		return out;
	})()`)
	require.Equal(t, "200", got["status"])
	require.Equal(t, "text/html; charset=utf-8", got["type"])
	require.Equal(t, "<p>tab A answers /from-b for "+got["peer"]+"</p>", got["body"])
	step(t, a, "tab A lists B's request by its short peer id",
		chromedp.WaitVisible(chromedp.Search(`//ol[@id="served-log"]/li[contains(., "GET /from-b from `+got["peer"][:6]+`")]`)))

	// Chat: B's broadcast shows up in A's page (A reads it over EventSource),
	// and A's answer in B's.
	step(t, a, "tab A joined the chat",
		chromedp.WaitVisible(chromedp.Search(`//span[@id="me" and string-length(text()) = 6]`)))
	step(t, b, "tab B sends a chat line",
		chromedp.SendKeys(chromedp.ID("chat-text"), "hi from the other tab"),
		chromedp.Click(chromedp.ID("chat-send")),
		chromedp.WaitVisible(chromedp.Search(`//ul[@id="chat-log"]/li[contains(., "(you)hi from the other tab")]`)),
	)
	step(t, a, "the chat line shows up in tab A, and A answers",
		chromedp.WaitVisible(chromedp.Search(`//ul[@id="chat-log"]/li[contains(., "hi from the other tab")]`)),
		chromedp.SendKeys(chromedp.ID("chat-text"), "hello back"),
		chromedp.Click(chromedp.ID("chat-send")),
		chromedp.WaitVisible(chromedp.Search(`//ul[@id="chat-log"]/li[contains(., "(you)hello back")]`)),
	)
	step(t, b, "A's answer shows up in tab B",
		chromedp.WaitVisible(chromedp.Search(`//ul[@id="chat-log"]/li[contains(., "hello back")]`)))

	shot, err := chromedp.Run(a, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	_, err = png.Decode(bytes.NewReader(shot))
	require.NoError(t, err, "the screenshot is a PNG")
	// C2CVIA_SCREENSHOT=docs/page.png go test -run TestBrowserPage refreshes the README's picture.
	if out := os.Getenv("C2CVIA_SCREENSHOT"); out != "" {
		require.NoError(t, os.WriteFile(filepath.Clean(out), shot, 0o644))
	}

	// A chat line is text, never markup.
	step(t, b, "tab B sends markup",
		chromedp.SendKeys(chromedp.ID("chat-text"), "<b>bold</b>"),
		chromedp.Click(chromedp.ID("chat-send")))
	step(t, a, "the markup shows up in tab A as text",
		chromedp.WaitVisible(chromedp.Search(`//ul[@id="chat-log"]/li[contains(., "<b>bold</b>")]`)))
	require.Zero(t, eval[int](t, a, `document.querySelectorAll("#chat-log b").length`))

	// Stopping ends serving: the gateway has nobody to ask any more.
	step(t, a, "tab A stops serving", chromedp.Click(chromedp.ID("serve")),
		chromedp.WaitNotVisible(chromedp.ID("share")))
	require.Equal(t, "Start serving", strings.TrimSpace(eval[string](t, a, `document.getElementById("serve").textContent`)))
}

// TestBrowserPageClaimedNet: a tab that tries to serve a net another key
// holds is told so, and serves nothing.
func TestBrowserPageClaimedNet(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	r.pullReqs("taken", "another-key-0123456789", url.Values{"wait": {"0"}})
	a := newBrowser(t)
	step(t, a, "the page refuses a claimed net",
		chromedp.Navigate(r.URL+"/?net=taken"),
		chromedp.Click(chromedp.ID("serve")),
		chromedp.WaitVisible(chromedp.Search(`//p[@id="serve-status" and contains(., "served by another browser")]`)),
		chromedp.WaitNotVisible(chromedp.ID("share")),
	)
}

// TestBrowserPageOnPhone: the page fits a phone's width without sideways
// scrolling.
func TestBrowserPageOnPhone(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	a := newBrowser(t)
	step(t, a, "the page opens on a phone-sized screen",
		chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile),
		chromedp.Navigate(r.URL+"/"),
		chromedp.WaitVisible(chromedp.ID("serve")),
	)
	width := eval[map[string]int](t, a, `({ scroll: document.documentElement.scrollWidth, inner: window.innerWidth })`)
	require.LessOrEqual(t, width["scroll"], width["inner"], "no sideways scrolling")
	net := eval[string](t, a, `document.getElementById("net").value`)
	require.Regexp(t, `^tab-[a-z0-9]{6}$`, net, "a visitor without ?net= gets a fresh net")
}
