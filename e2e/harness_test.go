package e2e_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"github.com/spikehq/spike/internal/testkit/faultproxy"
)

// binaries the harness runs, and the Debian package each comes from.
var binaries = []struct{ name, pkg string }{
	{"haproxy", "haproxy"},
	{"redis-server", "redis-server"},
	{"mariadbd", "mariadb-server"},
	{"mariadb-install-db", "mariadb-server"},
	{"nats-server", "nats-server"},
}

// lookBin finds a server binary on PATH or in the sbin folders Debian
// installs daemons to (often not on a user's PATH).
func lookBin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// requireCluster skips unless the cluster test is asked for, and fails
// (under SPIKE_TEST_REQUIRE) naming the package to install when a server
// binary is missing.
func requireCluster(t *testing.T) map[string]string {
	t.Helper()
	required := os.Getenv("SPIKE_TEST_REQUIRE") != ""
	if os.Getenv("SPIKE_TEST_CLUSTER") == "" && !required {
		t.Skip("set SPIKE_TEST_CLUSTER=1 to run the multi-instance fault test (needs haproxy, redis-server, mariadb-server, nats-server)")
	}
	if testing.Short() {
		t.Skip("multi-instance fault test: not in -short mode")
	}
	bins := map[string]string{}
	var missing []string
	for _, b := range binaries {
		p, err := lookBin(b.name)
		if err != nil {
			missing = append(missing, fmt.Sprintf("%s (apt-get install -y %s)", b.name, b.pkg))
			continue
		}
		bins[b.name] = p
	}
	if len(missing) > 0 {
		msg := "cluster test: missing " + strings.Join(missing, ", ")
		if required {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return bins
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// proc is one server process started by the test. Its output goes to a
// file in the test's temporary folder.
type proc struct {
	name    string
	args    []string
	env     []string
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func newProc(t *testing.T, dir, name string, env []string, args ...string) *proc {
	p := &proc{name: name, args: args, env: env, logPath: filepath.Join(dir, filepath.Base(args[0])+"-"+name+".log")}
	t.Cleanup(p.kill)
	return p
}

// start runs the process; it does not wait for it to be ready.
func (p *proc) start(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "==== %s start %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(p.args, " "))
	cmd := exec.Command(p.args[0], p.args[1:]...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); f.Close(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
}

// signal sends sig to the running process.
func (p *proc) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Signal(sig)
	}
}

// kill sends SIGKILL and waits (bounded) for the process to be gone.
func (p *proc) kill() { p.stop(syscall.SIGKILL) }

// stop sends sig and waits up to 20 s for the process to exit, then kills it.
func (p *proc) stop(sig syscall.Signal) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGCONT) // a stopped process cannot exit on SIGTERM
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// tail returns the last n lines of the process's log.
func (p *proc) tail(n int) string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 4*n {
			lines = lines[len(lines)-n:]
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// grep returns the log lines containing s (at most max of them).
func (p *proc) grep(s string, max int) []string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
			if len(out) == max {
				break
			}
		}
	}
	return out
}

// waitFor polls ok every 50 ms until it returns nil or timeout passes.
func waitFor(t *testing.T, p *proc, what string, timeout time.Duration, ok func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := ok()
		if err == nil {
			return
		}
		if p != nil && p.exited() {
			t.Fatalf("%s exited while waiting for %s: %v\n%s", p.name, what, err, p.tail(40))
		}
		if time.Now().After(deadline) {
			tail := ""
			if p != nil {
				tail = p.tail(40)
			}
			t.Fatalf("%s: not within %v: %v\n%s", what, timeout, err, tail)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cluster is the whole deployment: Redis, MariaDB, NATS, three spike
// instances and HAProxy in front, all on loopback ports of this test.
type cluster struct {
	dir    string
	bins   map[string]string
	secret []byte

	redisAddr string
	redis     *proc

	mysqlPort int
	mysql     *proc

	natsPort int
	natsDir  string
	nats     *proc

	spikeBin string
	config   string
	spikes   []*spikeProc
	links    []map[link]*faultproxy.Proxy // per instance, with clusterOptions.links

	lbAddr  string // HAProxy over every instance
	lb1Addr string // HAProxy over the first instance only (throughput baseline)
	haproxy *proc
}

type spikeProc struct {
	*proc
	addr string
}

func startCluster(t *testing.T, bins map[string]string, instances int) *cluster {
	t.Helper()
	return startClusterWith(t, bins, clusterOptions{instances: instances})
}

// clusterOptions shape a cluster beyond its number of instances.
type clusterOptions struct {
	instances int
	// links puts a faultproxy between each instance and each of Redis,
	// MariaDB and NATS (cluster.links), so one instance's link can be slowed.
	links bool
	// env, if set, adds environment variables to instance i.
	env func(i int) []string
}

// link names a dependency an instance reaches through a faultproxy.
type link string

const (
	linkRedis link = "redis"
	linkMySQL link = "mysql"
	linkNATS  link = "nats"
)

func startClusterWith(t *testing.T, bins map[string]string, opt clusterOptions) *cluster {
	t.Helper()
	c := &cluster{dir: t.TempDir(), bins: bins}
	raw := make([]byte, 32)
	rand.Read(raw)
	c.secret = []byte(hex.EncodeToString(raw))

	// Build spike while the services start.
	built := make(chan error, 1)
	c.spikeBin = filepath.Join(c.dir, "spike")
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", c.spikeBin, "github.com/spikehq/spike/cmd/spike")
		out, err := cmd.CombinedOutput()
		if err != nil {
			err = fmt.Errorf("go build: %v\n%s", err, out)
		}
		built <- err
	}()

	c.startRedis(t)
	c.startMariaDB(t)
	c.startNATS(t)
	select {
	case err := <-built:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Minute):
		t.Fatal("go build of spike did not finish within 5 minutes")
	}

	// HAProxy's addresses come first: the instances' checkout pages and
	// the sandbox gateway's webhooks go through it (payments.public_url).
	c.lbAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	c.lb1Addr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	c.config = filepath.Join(c.dir, "spike.yaml")
	direct := map[link]string{linkRedis: c.redisAddr, linkMySQL: fmt.Sprintf("127.0.0.1:%d", c.mysqlPort), linkNATS: fmt.Sprintf("127.0.0.1:%d", c.natsPort)}
	c.writeConfig(t, c.config, direct)
	for i := range opt.instances {
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		data := filepath.Join(c.dir, fmt.Sprintf("spike%d", i))
		config := c.config
		if opt.links {
			c.links = append(c.links, c.proxyLinks(t, direct))
			config = filepath.Join(c.dir, fmt.Sprintf("spike%d.yaml", i))
			addrs := map[link]string{}
			for l, p := range c.links[i] {
				addrs[l] = p.Addr()
			}
			c.writeConfig(t, config, addrs)
		}
		env := []string{"SPIKE_ADDR=" + addr, "SPIKE_DATA=" + data}
		if opt.env != nil {
			env = append(env, opt.env(i)...)
		}
		sp := &spikeProc{addr: addr, proc: newProc(t, c.dir, fmt.Sprintf("%d", i), env, c.spikeBin, "serve", "--config", config)}
		c.spikes = append(c.spikes, sp)
		// One at a time: the first applies the migrations.
		c.startSpike(t, i)
	}
	c.startHAProxy(t)
	return c
}

// proxyLinks starts a faultproxy in front of each dependency.
func (c *cluster) proxyLinks(t *testing.T, direct map[link]string) map[link]*faultproxy.Proxy {
	t.Helper()
	out := map[link]*faultproxy.Proxy{}
	for l, target := range direct {
		p, err := faultproxy.Start(target)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		out[l] = p
	}
	return out
}

// writeConfig writes an instance's config file reaching the dependencies
// at addrs.
func (c *cluster) writeConfig(t *testing.T, path string, addrs map[link]string) {
	t.Helper()
	dsn := func(db string) string { return fmt.Sprintf("root@tcp(%s)/%s", addrs[linkMySQL], db) }
	cfg := fmt.Sprintf(`# written by e2e/harness_test.go
jwt_secret: %q
events:
  hmac_key: %q
nats:
  urls: [%q]
mysql:
  primary: %q
  order_shards:
    - primary: %q
    - primary: %q
  migrate: true
redis:
  addrs: [%q]
payments:
  # Every instance shares jwt_secret above, so each derives the same
  # sandbox secret; checkout pages and webhooks go through HAProxy.
  public_url: %q
  # Unsold units of an ended sale go back to the product soon after.
  settle_after: 1s
  sandbox:
    # Real providers deliver webhooks twice and out of order.
    duplicate_rate: 0.3
    reorder_rate: 0.3
`, c.secret, "e2e-event-key-"+string(c.secret), "nats://"+addrs[linkNATS], dsn("spike"), dsn("spike_orders_0"), dsn("spike_orders_1"), addrs[linkRedis], "http://"+c.lbAddr)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) startRedis(t *testing.T) {
	port := freePort(t)
	c.redisAddr = fmt.Sprintf("127.0.0.1:%d", port)
	dir := filepath.Join(c.dir, "redis")
	os.MkdirAll(dir, 0o755)
	c.redis = newProc(t, c.dir, "redis", nil, c.bins["redis-server"],
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--protected-mode", "no")
	c.redis.start(t)
	c.waitRedis(t)
}

func (c *cluster) waitRedis(t *testing.T) {
	t.Helper()
	waitFor(t, c.redis, "redis ping", 20*time.Second, func() error {
		reply, err := redisCmd(c.redisAddr, "PING")
		if err == nil && reply != "+PONG" {
			err = fmt.Errorf("ping: %q", reply)
		}
		return err
	})
}

// redisCmd sends one command in RESP and returns the first reply line.
func redisCmd(addr string, args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line), err
}

// redisCommands returns Redis's count of commands processed so far.
func redisCommands(addr string) (int64, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n")); err != nil {
		return 0, err
	}
	rd := bufio.NewReader(conn)
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			return 0, err
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_commands_processed:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
}

// redisHGet returns a hash field's value ("" if it has none).
func redisHGet(addr, key, field string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "*3\r\n$4\r\nHGET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", len(key), key, len(field), field)
	rd := bufio.NewReader(conn)
	head, err := rd.ReadString('\n')
	if err != nil || !strings.HasPrefix(head, "$") || strings.HasPrefix(head, "$-1") {
		return "", err
	}
	val, err := rd.ReadString('\n')
	return strings.TrimSpace(val), err
}

// diagnoseKey describes what the cluster holds for a placement: its hold
// in the sale's Redis counters ("order id|units|placed µs|confirmed") and
// what reading that order answers.
func (c *cluster) diagnoseKey(cl *client, saleID string, req request) string {
	hold, err := redisHGet(c.redisAddr, "spike:{sale:"+saleID+"}:keys", strconv.FormatInt(req.user, 10)+":"+req.key)
	out := fmt.Sprintf("redis hold of the key: %q (err %v)", hold, err)
	if id, _, ok := strings.Cut(hold, "|"); ok {
		r, err := cl.Do(context.Background(), "GET", "/v1/orders/"+id, cl.Token(1, true), nil, nil)
		out += fmt.Sprintf("; GET /v1/orders/%s as admin: %d %s (err %v)", id, r.Status, r.Body, err)
		for _, sp := range c.spikes {
			for _, l := range sp.grep(id, 5) {
				out += "\n  spike " + sp.name + ": " + l
			}
		}
	}
	return out
}

func (c *cluster) startMariaDB(t *testing.T) {
	t.Helper()
	data := filepath.Join(c.dir, "mariadb")
	install := exec.Command(c.bins["mariadb-install-db"], "--no-defaults", "--datadir="+data,
		"--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve")
	if os.Geteuid() == 0 {
		install.Args = append(install.Args, "--user=root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	install = exec.CommandContext(ctx, install.Args[0], install.Args[1:]...)
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	c.mysqlPort = freePort(t)
	args := []string{c.bins["mariadbd"], "--no-defaults", "--datadir=" + data,
		"--socket=" + filepath.Join(c.dir, "mariadb.sock"), "--pid-file=" + filepath.Join(c.dir, "mariadb.pid"),
		"--port=" + strconv.Itoa(c.mysqlPort), "--bind-address=127.0.0.1", "--skip-grant-tables",
		"--skip-log-bin", "--innodb-buffer-pool-size=64M", "--innodb-flush-log-at-trx-commit=2",
		"--max-connections=500", "--skip-name-resolve"}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root") // mariadbd refuses to run as root otherwise
	}
	c.mysql = newProc(t, c.dir, "mariadb", nil, args...)
	c.mysql.start(t)
	var db *sql.DB
	waitFor(t, c.mysql, "mariadb ping", 60*time.Second, func() error {
		var err error
		if db == nil {
			if db, err = sql.Open("mysql", fmt.Sprintf("root@tcp(127.0.0.1:%d)/?timeout=1s", c.mysqlPort)); err != nil {
				return err
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return db.PingContext(ctx)
	})
	defer db.Close()
	for _, name := range []string{"spike", "spike_orders_0", "spike_orders_1"} {
		if _, err := db.Exec("CREATE DATABASE " + name); err != nil {
			t.Fatalf("create database %s: %v", name, err)
		}
	}
}

func (c *cluster) startNATS(t *testing.T) {
	c.natsPort = freePort(t)
	c.natsDir = filepath.Join(c.dir, "nats")
	c.nats = newProc(t, c.dir, "nats", nil, c.bins["nats-server"], "-a", "127.0.0.1", "-p", strconv.Itoa(c.natsPort), "-js", "-sd", c.natsDir)
	c.nats.start(t)
	c.waitNATS(t)
}

func (c *cluster) waitNATS(t *testing.T) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", c.natsPort)
	waitFor(t, c.nats, "nats", 30*time.Second, func() error {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		line, err := bufio.NewReader(conn).ReadString('\n') // the INFO line
		if err == nil && !strings.HasPrefix(line, "INFO") {
			err = fmt.Errorf("nats said %q", line)
		}
		return err
	})
}

// startSpike starts instance i and waits until it is ready.
func (c *cluster) startSpike(t *testing.T, i int) {
	t.Helper()
	sp := c.spikes[i]
	sp.start(t)
	waitFor(t, sp.proc, "spike "+sp.name+" /readyz", 90*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+sp.addr+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("readyz: %d", resp.StatusCode)
		}
		return nil
	})
}

// haproxyConfig is the load balancer of the test: like
// deploy/haproxy.cfg, with shorter checks and timeouts (but http-request).
const haproxyConfig = `global
    maxconn 4096
    nbthread 1

defaults
    mode http
    option http-keep-alive
    timeout connect 1s
    timeout client  30s
    timeout server  15s
    # Both longer than the test client's idle timeout (20 s): a connection
    # the proxy times out answers 408 and closes, and a client that sends on
    # it at that moment reads the 408 as its answer. http-request covers a
    # new connection's wait for its first request too: the client dials
    # connections that then wait unused in its pool (another one freed up
    # first), and at 10 s those got 408s (CI, TestCluster/InstanceKilled).
    timeout http-request 25s
    timeout http-keep-alive 30s
    timeout queue 5s
    # Only a failed connection is retried (the request was never sent), on
    # another instance. A request that reached an instance is never sent
    # again: clients retry with their Idempotency-Key.
    retry-on conn-failure
    retries 2
    option redispatch 1

frontend api
    bind %s
    default_backend spike

frontend one
    bind %s
    default_backend spike_one

backend spike_one
    option httpchk GET /healthz
    http-check expect status 200
    server spike0 %s check inter 500ms

backend spike
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server inter 500ms fastinter 250ms downinter 500ms fall 2 rise 2 maxconn 512
%s`

func (c *cluster) startHAProxy(t *testing.T) {
	t.Helper()
	var servers strings.Builder
	for i, sp := range c.spikes {
		fmt.Fprintf(&servers, "    server spike%d %s check\n", i, sp.addr)
	}
	path := filepath.Join(c.dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(haproxyConfig, c.lbAddr, c.lb1Addr, c.spikes[0].addr, servers.String())), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(c.bins["haproxy"], "-c", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	c.haproxy = newProc(t, c.dir, "lb", nil, c.bins["haproxy"], "-db", "-f", path)
	c.haproxy.start(t)
	waitFor(t, c.haproxy, "haproxy /healthz", 20*time.Second, func() error {
		resp, err := http.Get("http://" + c.lbAddr + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("healthz via haproxy: %d", resp.StatusCode)
		}
		return nil
	})
}

// dumpLogs logs the tails of every process's log (on failure).
func (c *cluster) dumpLogs(t *testing.T, n int) {
	t.Helper()
	for _, sp := range c.spikes {
		t.Logf("---- spike %s (%s):\n%s", sp.name, sp.logPath, sp.tail(n))
	}
	for _, p := range []*proc{c.redis, c.mysql, c.nats, c.haproxy} {
		if p != nil {
			t.Logf("---- %s:\n%s", p.name, p.tail(n/4))
		}
	}
}
