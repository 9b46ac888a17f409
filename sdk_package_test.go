// The JavaScript SDK as an npm package (sdk/package.json, sdk/c2cvia.d.ts),
// the way a user gets it: packed, installed into a project of its own,
// compiled with tsc --strict and run against a live relay. The README's
// "TypeScript and npm" and "A Hono app behind the relay" blocks, and the
// package's own README, are the code these tests install, compile and run.

package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// npmPins are the exact versions the tests install for what the README
// installs by major version: a new release cannot change a test's outcome.
var npmPins = map[string]string{
	"hono@4":         "hono@4.13.19",
	"typescript@5":   "typescript@5.9.3",
	"@types/node@20": "@types/node@20.19.43",
}

// needNpm returns the paths of node and npm, skipping the test when either
// or another of tools is missing (failing it under CI=true).
func needNpm(t *testing.T, tools ...string) (nodeBin, npmBin string) {
	t.Helper()
	for _, tool := range append([]string{"node", "npm"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is needed for the npm package tests and is not on PATH (.ci/run installs Debian's nodejs, npm and curl)", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	nodeBin, _ = exec.LookPath("node")
	npmBin, _ = exec.LookPath("npm")
	return nodeBin, npmBin
}

// npmEnv is the environment of every npm, npx, tsc and node the tests run:
// no audit, funding or update notices, only errors on stderr.
func npmEnv(extra ...string) []string {
	return append(os.Environ(), append([]string{
		"npm_config_audit=false", "npm_config_fund=false", "npm_config_update_notifier=false",
		"npm_config_loglevel=error", "NO_COLOR=1",
	}, extra...)...)
}

// runIn runs name with args in dir within limit and returns its combined
// output; err is set when it fails or runs out of time.
func runIn(dir string, limit time.Duration, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s %s did not finish within %s: %w", name, strings.Join(args, " "), limit, ctx.Err())
	}
	return string(out), err
}

// packageJSON is what the tests read of sdk/package.json.
type packageJSON struct {
	Name    string                       `json:"name"`
	Version string                       `json:"version"`
	Type    string                       `json:"type"`
	Types   string                       `json:"types"`
	Exports map[string]map[string]string `json:"exports"`
	Files   []string                     `json:"files"`
	Engines map[string]string            `json:"engines"`
	License string                       `json:"license"`
}

// TestNpmPackage: `npm pack` makes a tarball of the module, its types and
// its README, nothing else (no tests); the module in it is, byte for byte,
// what the relay serves at /sdk/c2cvia.js; and the README names the
// tarball npm writes.
func TestNpmPackage(t *testing.T) {
	t.Parallel()
	_, npmBin := needNpm(t)
	tarball := npmPack(t, npmBin)

	var pkg packageJSON
	raw, err := os.ReadFile("sdk/package.json")
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &pkg))
	assert.Equal(t, "c2cvia", pkg.Name)
	assert.Regexp(t, `^\d+\.\d+\.\d+$`, pkg.Version)
	assert.Equal(t, "module", pkg.Type)
	assert.Equal(t, map[string]string{"types": "./c2cvia.d.ts", "default": "./c2cvia.js"}, pkg.Exports["."])
	assert.Equal(t, "./c2cvia.d.ts", pkg.Types)
	assert.Equal(t, ">=20", pkg.Engines["node"])
	assert.Equal(t, fmt.Sprintf("c2cvia-%s.tgz", pkg.Version), filepath.Base(tarball))

	files := readTarball(t, tarball)
	var names []string
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	assert.Equal(t, []string{"package/README.md", "package/c2cvia.d.ts", "package/c2cvia.js", "package/package.json"}, names,
		"the module, its types, its README and package.json: no tests")

	r := newTestRelay(t)
	served := r.get("/sdk/c2cvia.js", nil)
	require.Equal(t, http.StatusOK, served.Status)
	assert.True(t, bytes.Equal(served.Body, files["package/c2cvia.js"]), "the package's module is the one the relay serves")
	for _, f := range []string{"c2cvia.d.ts", "README.md", "package.json"} {
		want, err := os.ReadFile(filepath.Join("sdk", f))
		require.NoError(t, err)
		assert.Equal(t, string(want), string(files["package/"+f]), f)
	}

	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	assert.Contains(t, string(readme), "npm install ./"+filepath.Base(tarball)+" ",
		"the README installs the tarball npm pack writes")
}

// npmPack packs sdk/ with `npm pack` into a temporary folder and returns
// the tarball's path.
func npmPack(t *testing.T, npmBin string) string {
	t.Helper()
	dir := t.TempDir()
	out, err := runIn("sdk", 2*time.Minute, npmEnv(), npmBin, "pack", "--json", "--pack-destination", dir)
	require.NoError(t, err, "%s", out)
	var packed []struct {
		Filename string `json:"filename"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &packed), "%s", out)
	require.Len(t, packed, 1)
	return filepath.Join(dir, packed[0].Filename)
}

// readTarball returns the files of a .tgz by name.
func readTarball(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	gz, err := gzip.NewReader(f)
	require.NoError(t, err)
	tr := tar.NewReader(gz)
	files := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		require.NoError(t, err)
		b, err := io.ReadAll(tr)
		require.NoError(t, err)
		files[h.Name] = b
	}
}

// codeBlocks returns the fenced blocks of section by language, in order.
func codeBlocks(section string) map[string][]string {
	blocks := map[string][]string{}
	for _, m := range regexp.MustCompile("(?s)```(\\w+)\n(.*?)```").FindAllStringSubmatch(section, -1) {
		blocks[m[1]] = append(blocks[m[1]], m[2])
	}
	return blocks
}

// readmeSubsection returns the README from heading up to the next heading
// of its level or above.
func readmeSubsection(t *testing.T, heading string) string {
	t.Helper()
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(readme), "\n"+heading+"\n")
	require.True(t, ok, "README has the section %q", heading)
	section, _, _ = strings.Cut(section, "\n### ")
	section, _, _ = strings.Cut(section, "\n## ")
	return section
}

// TestTypeScriptProject does what the README's "TypeScript and npm" tells
// a reader to do: its commands make a project with the packed package, Hono
// and TypeScript; its tsconfig.json compiles its main.ts and the Hono app's
// app.ts (with testdata/npm's programs) under --strict with no error; each
// then runs on Node against a live relay and prints what the README says,
// as does the example of the package's own README (sdk/README.md).
// Type errors must fail to compile, so the types cannot be `any`.
func TestTypeScriptProject(t *testing.T) {
	t.Parallel()
	nodeBin, _ := needNpm(t, "bash", "curl")
	typed := readmeSubsection(t, "### TypeScript and npm")
	hono := readmeSubsection(t, "### A Hono app behind the relay")
	blocks, honoBlocks := codeBlocks(typed), codeBlocks(hono)
	require.Len(t, blocks["sh"], 1, "the install commands")
	require.Len(t, blocks["json"], 1, "the tsconfig.json")
	require.Len(t, blocks["ts"], 1, "main.ts")
	require.Len(t, blocks["text"], 1, "what main.ts prints")
	require.Len(t, honoBlocks["ts"], 1, "app.ts")
	require.Len(t, honoBlocks["sh"], 1, "the curl calls")
	require.Len(t, honoBlocks["text"], 1, "what they print")

	base, _ := startRun(t, nil, "serve", "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "c2cvia.db"))
	atRelay := func(code string) string { return strings.ReplaceAll(code, "http://localhost:8080", base) }
	repo, err := os.Getwd()
	require.NoError(t, err)

	// The README's commands, as pasted, with the versions pinned.
	install := blocks["sh"][0]
	for loose, pinned := range npmPins {
		require.Contains(t, install, " "+loose, "the README installs %s", loose)
		install = strings.ReplaceAll(install, " "+loose, " "+pinned)
	}
	work := t.TempDir()
	out, err := runIn(work, 4*time.Minute, npmEnv("C2CVIA="+repo), "bash", "-euo", "pipefail", "-c", install)
	require.NoError(t, err, "the README's install commands:\n%s", out)
	project := filepath.Join(work, "hello-c2cvia")

	var tsconfig struct {
		CompilerOptions map[string]any `json:"compilerOptions"`
	}
	require.NoError(t, json.Unmarshal([]byte(blocks["json"][0]), &tsconfig))
	assert.Equal(t, true, tsconfig.CompilerOptions["strict"])
	assert.Equal(t, "NodeNext", tsconfig.CompilerOptions["module"])
	assert.Equal(t, "ES2022", tsconfig.CompilerOptions["target"])
	sources := map[string]string{
		"tsconfig.json": blocks["json"][0],
		"main.ts":       atRelay(blocks["ts"][0]),
		"app.ts":        atRelay(honoBlocks["ts"][0]),
	}
	pkgReadme, err := os.ReadFile("sdk/README.md")
	require.NoError(t, err)
	pkgBlocks := codeBlocks(string(pkgReadme))
	require.Len(t, pkgBlocks["ts"], 1, "the package's README has its example")
	require.Contains(t, pkgBlocks["ts"][0], `console.log(await (await ada.fetch("/")).text()); // hi`)
	sources["package-readme.ts"] = atRelay(pkgBlocks["ts"][0])
	for _, f := range []string{"check.ts", "hono-client.ts"} {
		b, err := os.ReadFile(filepath.Join("testdata", "npm", f))
		require.NoError(t, err)
		sources[f] = string(b)
	}
	for name, text := range sources {
		require.NoError(t, os.WriteFile(filepath.Join(project, name), []byte(text), 0o644))
	}
	out, err = runIn(project, 2*time.Minute, npmEnv(), "npx", "tsc")
	require.NoError(t, err, "tsc --strict of the README's programs and testdata/npm:\n%s", out)
	assert.Empty(t, out, "tsc reports nothing")

	env := npmEnv("C2CVIA_RELAY=" + base)
	t.Run("types bite", func(t *testing.T) { typesBite(t, project) })

	t.Run("main.ts prints what the README says", func(t *testing.T) {
		out, err := runIn(project, time.Minute, env, nodeBin, "dist/main.js")
		require.NoError(t, err, "%s", out)
		assert.Equal(t, blocks["text"][0], out)
	})

	t.Run("the package's README example", func(t *testing.T) {
		out, err := runIn(project, time.Minute, env, nodeBin, "dist/package-readme.js")
		require.NoError(t, err, "%s", out)
		assert.Equal(t, "hi\n", out)
	})

	t.Run("every export as typed", func(t *testing.T) {
		out, err := runIn(project, 3*time.Minute, env, nodeBin, "dist/check.js")
		require.NoError(t, err, "%s", out)
		assert.Equal(t, "ok\n", out)
	})

	t.Run("the Hono app", func(t *testing.T) {
		honoApp(t, project, nodeBin, base, atRelay(honoBlocks["sh"][0]), honoBlocks["text"][0])
	})
}

// honoApp runs the README's Hono app (dist/app.js) behind the relay at
// base and calls it through the gateway, with the README's curl lines and
// Go's client, and through session.fetch: each answer is the one Hono
// made. Ctrl-C (SIGINT) then ends the app cleanly.
func honoApp(t *testing.T, project, nodeBin, base, curls, printed string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	app := exec.CommandContext(ctx, nodeBin, "dist/app.js")
	app.Dir, app.Env = project, npmEnv()
	var appOut syncBuffer
	app.Stdout, app.Stderr = &appOut, &appOut
	require.NoError(t, app.Start())
	exited := make(chan error, 1)
	go func() { exited <- app.Wait() }()
	waited := false
	defer func() {
		if !waited {
			_ = app.Process.Kill()
			<-exited
		}
	}()

	// The gateway holds each call until the app's first poll takes it: no
	// need to wait for the app to start.
	require.Contains(t, curls, "RELAY="+base+"\n")
	out, err := runIn(project, time.Minute, npmEnv(), "bash", "-euo", "pipefail", "-c", curls)
	require.NoError(t, err, "%s\napp: %s", out, &appOut)
	assert.Equal(t, printed, out, "the README's curl lines print what it says")

	type answer struct {
		Status      int    `json:"status"`
		ContentType string `json:"contentType"`
		Location    string `json:"location"`
		Body        string `json:"body"`
	}
	// What Hono answers, byte for byte: its c.text and 404 name their
	// charset differently, its c.json none.
	want := []answer{
		{200, "text/plain;charset=UTF-8", "", "Hello from Hono\n"},
		{200, "application/json", "", `{"id":"42","lang":"fr","from":"via"}`},
		{201, "application/json", "/via/hono-demo/users/7", `{"created":"Ada"}`},
		{404, "text/plain; charset=UTF-8", "", "404 Not Found"},
	}
	calls := []*http.Request{}
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/", ""}, {"GET", "/users/42", ""}, {"POST", "/users", `{"name":"Ada"}`}, {"GET", "/nowhere", ""},
	} {
		req, err := http.NewRequest(c.method, base+"/via/hono-demo"+c.path, strings.NewReader(c.body))
		require.NoError(t, err)
		req.Header.Set("Accept-Language", "fr")
		if c.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		calls = append(calls, req)
	}
	for i, req := range calls {
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		got := answer{resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Location"), string(body)}
		assert.Equal(t, want[i], got, "%s %s through the gateway", req.Method, req.URL.Path)
	}

	// session.fetch: the same answers, from its own peer_id, and the
	// Location as the app wrote it (only the gateway rewrites it).
	out, err = runIn(project, time.Minute, npmEnv("C2CVIA_RELAY="+base), nodeBin, "dist/hono-client.js")
	require.NoError(t, err, "%s\napp: %s", out, &appOut)
	var viaSession struct {
		PeerID  string   `json:"peerId"`
		Answers []answer `json:"answers"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &viaSession), "%s", out)
	want[1].Body = fmt.Sprintf(`{"id":"42","lang":"fr","from":%q}`, viaSession.PeerID)
	want[2].Location = "/users/7"
	assert.Equal(t, want, viaSession.Answers)

	require.NoError(t, app.Process.Signal(syscall.SIGINT))
	select {
	case err := <-exited:
		waited = true
		assert.NoError(t, err, "the app ends cleanly on Ctrl-C: %s", &appOut)
	case <-time.After(30 * time.Second):
		t.Fatalf("the app did not end within 30 s of SIGINT: %s", &appOut)
	}
	assert.Empty(t, appOut.String(), "the app printed nothing")
}

// typesBite compiles programs that misuse the package, next to the
// project (sharing its node_modules): each must fail with its error, while
// a program that uses it right, beside them, compiles. Types of `any`
// would let every one of them through. Options may be given as undefined
// (exactOptionalPropertyTypes), and a browser's program, with the DOM
// library and no Node types, compiles too.
func typesBite(t *testing.T, project string) {
	cases := []struct{ name, code, want string }{
		{"net is a string", `serve({ net: 1, key: "k", fetch: () => new Response() });`, "TS2322"},
		{"a handler returns a Response", `serve({ net: "n", key: "k", fetch: (req) => req.url });`, "TS2322"},
		{"key is required", `serve({ net: "n", fetch: () => new Response() });`, "TS2345"},
		{"lease is a number of seconds", `serve({ net: "n", key: "k", fetch: () => new Response(), lease: "30s" });`, "TS2322"},
		{"no such option", `serve({ net: "n", key: "k", fetch: () => new Response(), leaseSeconds: 30 });`, "TS2353"},
		{"peerId is a string", `const s = await login({ net: "n" }); const n: number = s.peerId;`, "TS2322"},
		{"send takes data", `const s = await login({ net: "n" }); await s.send("peer");`, "TS2554"},
		{"message data is JSON, not any", `const s = await login({ net: "n" }); for await (const m of s.messages()) m.data.text;`, "TS2339"},
		{"a unicast has no topic", `const s = await login({ net: "n" }); for await (const m of s.messages()) if (m.kind === "unicast") m.topic.length;`, "TS18047"},
		{"remoteAddr may be undefined", `serve({ net: "n", key: "k", fetch: (req, info) => new Response(String(info.remoteAddr.port)) });`, "TS18048"},
		{"defaults are read-only", `defaults.retries = 3;`, "TS2540"},
		{"parseJSON is not any", `const n: number = parseJSON("1");`, "TS2322"},
		{"peers have Dates", `const s = await login({ net: "n" }); const [p] = await s.peers(); p!.lastSeen.toUpperCase();`, "TS2339"},
		{"RelayError's status is a number", `const e = new RelayError(404, "not_found", "gone"); e.status.length;`, "TS2339"},
	}
	dir := filepath.Join(filepath.Dir(project), "bite")
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "browser"), 0o755))
	require.NoError(t, os.Symlink(filepath.Join(project, "node_modules"), filepath.Join(dir, "node_modules")))
	write := func(name, text string) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644))
	}
	write("package.json", `{"type": "module"}`)
	write("tsconfig.json", `{"compilerOptions": {"strict": true, "module": "NodeNext", "target": "ES2022", "exactOptionalPropertyTypes": true, "noEmit": true}, "include": ["*.ts"]}`)
	const imports = `import { serve, login, defaults, parseJSON, RelayError } from "c2cvia";` + "\n"
	for i, c := range cases {
		write(fmt.Sprintf("bad%02d.ts", i), imports+c.code+"\nexport {};\n")
	}
	write("good.ts", imports+`const s = await login({ net: "n", relay: process.env.C2CVIA_RELAY, retries: undefined });
for await (const m of s.messages()) if (m.kind === "multicast") console.log(m.topic.length, m.data);
serve({ net: "n", key: "k", fetch: (req, info) => new Response(String(info.remoteAddr?.port), { status: 200 }) });
console.log(defaults.retries, parseJSON("1"), new RelayError(404, "not_found", "gone").status + 1);
`)
	out, err := runIn(dir, 2*time.Minute, npmEnv(), "npx", "tsc", "-p", ".")
	require.Error(t, err, "tsc must refuse the misuses:\n%s", out)
	assert.NotContains(t, out, "good.ts", "the right use compiles")
	for i, c := range cases {
		assert.Regexp(t, fmt.Sprintf(`(?m)^bad%02d\.ts\(2,\d+\): error %s:`, i, c.want), out, c.name)
	}

	// In a page: the DOM library's fetch types, no Node types.
	write("browser/tsconfig.json", `{"compilerOptions": {"strict": true, "module": "ES2022", "moduleResolution": "bundler",
		"target": "ES2022", "lib": ["ES2022", "DOM"], "types": [], "noEmit": true}}`)
	write("browser/page.ts", `import { serve, login, type Session } from "c2cvia";
const server = serve({ net: "tab", key: "tab-secret-key-0123456789", fetch: (req, info) => new Response(info.from + " " + req.url) });
const s: Session = await login({ net: "tab" });
const res: Response = await s.fetch(new URL("/x", location.href), { signal: AbortSignal.timeout(5000) });
document.title = await res.text();
await server.close();
export {};
`)
	out, err = runIn(filepath.Join(dir, "browser"), 2*time.Minute, npmEnv(), "npx", "tsc", "-p", ".")
	assert.NoError(t, err, "a page's program compiles with the DOM library alone:\n%s", out)
}
