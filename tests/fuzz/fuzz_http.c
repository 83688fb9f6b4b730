/* fuzz_http: the whole HTTP request path on arbitrary bytes: h2o's HTTP/1 parser, our head
 * checks (framing, sizes), routing, the KServe handlers, the infer layer and the WebSocket
 * upgrade, with a real server on a loopback port serving one sim model.
 *
 * Each input is written on a new connection (then the write side is shut), and the server's
 * loop runs until it closes the connection or a few hundred milliseconds of loop turns pass.
 * ASan/UBSan catch memory errors; the server must also still answer a health check after each
 * input, so a wedged loop fails too. The servers live for the whole fuzzing run: an input that
 * mentions "uthorization" goes to a second one with API keys (the key "fuzzkey", role infer)
 * and --rate-limit 2:2 and --allow-origin http://page.example, so that the head's early 401 and
 * 429, the dropped body behind them and a listed page's CORS are fuzzed too; every other
 * input to one without keys, so that the saved corpus reaches as deep as before. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gate/gate.h"
#include "server/server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bd_server_t *servers[2]; /* [1]: with API keys */
static bd_server_t *srv;        /* the one an exchange talks to */
static int port;

static void start(void)
{
    char dir[] = "/tmp/bd_fuzz_http_XXXXXX";
    if (!mkdtemp(dir)) {
        abort();
    }
    char path[256];
    snprintf(path, sizeof path, "%s/m", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/m/1", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/m/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        abort();
    }
    fputs("{\"backend\":\"sim\",\"max_batch_size\":4,"
          "\"inputs\":[{\"name\":\"INPUT0\",\"datatype\":\"FP32\",\"dims\":[2]}],"
          "\"outputs\":[{\"name\":\"OUTPUT0\",\"datatype\":\"FP32\",\"dims\":[2]}]}",
          f);
    fclose(f);
    signal(SIGPIPE, SIG_IGN);
    /* Connections the server has not seen close yet hold descriptors: as `batchd serve` does,
     * take the hard limit. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    bd_log_set_level(BD_LOG_ERROR);
    snprintf(path, sizeof path, "%s/keys", dir);
    if (!(f = fopen(path, "w"))) {
        abort();
    }
    fputs("fuzzkey infer\n", f);
    fclose(f);
    bd_err_t err = {0};
    bd_gate_opts_t go = {.keys_path = path, .rps = 2, .burst = 2}; /* 429s too */
    bd_gate_t *gate = bd_gate_new(&go, bd_clock_real(), &err);
    for (int i = 0; i < 2 && (i == 0 || gate); i++) {
        /* Each server its own repository, metrics and mailbox, as two processes would have. */
        bd_metrics_t *metrics = bd_metrics_new();
        bd_mailbox_t *mb = bd_mailbox_new(&err);
        bd_repo_opts_t ro = {.metrics = metrics, .mailbox = mb};
        bd_repo_t *repo = mb ? bd_repo_open(dir, &ro, &err) : NULL;
        bd_server_opts_t so = {.http = {.host = "127.0.0.1",
                                        .port = 0,
                                        .max_body_bytes = 65536,
                                        .model_control = BD_MODEL_CONTROL_EXPLICIT,
                                        .max_header_bytes = 4096,
                                        .gate = i == 1 ? gate : NULL,
                                        /* a listed page's CORS, on replies from the head too */
                                        .allow_origins = i == 1 ? "http://page.example" : NULL},
                               /* a head of over 128 bytes announcing ~64 KiB gets 503 */
                               .max_buffered_bytes = i == 0 ? 65536 + 128 : 0,
                               .max_decode_bytes = 1 << 20,
                               .ws_max_inflight = 8,
                               .ws_idle_timeout_us = 1000000};
        servers[i] = repo ? bd_server_new(repo, metrics, mb, &so, &err) : NULL;
    }
    if (!servers[0] || !servers[1]) {
        fprintf(stderr, "fuzz_http: %s\n", err.msg);
        abort();
    }
}

/* Talk to server i from now on. */
static void use(int i)
{
    srv = servers[i];
    port = bd_server_port(srv);
}

/* A connected socket to the server. libFuzzer's -timeout watchdog is a SIGALRM timer, so a
 * connect can return EINTR: the handshake then goes on in the kernel, and finishes when the
 * socket turns writable. */
static int connect_server(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = fd < 0 ? -1 : connect(fd, (struct sockaddr *)&a, sizeof a);
    if (rc != 0 && fd >= 0 && errno == EINTR) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        while ((rc = poll(&p, 1, 5000)) < 0 && errno == EINTR) {
        }
        int soerr = 0;
        socklen_t len = sizeof soerr;
        if (rc == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr == 0) {
            rc = 0;
        } else {
            errno = rc == 0 ? ETIMEDOUT : soerr ? soerr : errno;
            rc = -1;
        }
    }
    if (rc != 0) {
        fprintf(stderr, "fuzz_http: cannot connect to the server: %s\n", strerror(errno));
        abort();
    }
    return fd;
}

/* Send `data` on a new connection; run the loop until the server closes it or ~turns pass.
 * Returns what the server wrote (up to cap bytes). */
static size_t exchange(const uint8_t *data, size_t size, char *out, size_t cap, int turns)
{
    int fd = connect_server();
    size_t off = 0, got = 0;
    bool eof = false;
    for (int t = 0; t < turns && !eof; t++) {
        bd_server_poll(srv, 1);
        if (off < size) {
            ssize_t n = send(fd, data + off, size - off, MSG_DONTWAIT | MSG_NOSIGNAL);
            off += n > 0 ? (size_t)n : 0;
            if (off == size) {
                shutdown(fd, SHUT_WR);
            }
        }
        char buf[4096];
        ssize_t n;
        while ((n = recv(fd, buf, sizeof buf, MSG_DONTWAIT)) > 0) {
            size_t k = (size_t)n < cap - got ? (size_t)n : cap - got;
            memcpy(out + got, buf, k);
            got += k;
        }
        eof = n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
    }
    close(fd);
    bd_server_poll(srv, 0); /* let the server see the close */
    return got;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!servers[0]) {
        start();
    }
    static const char mark[] = "uthorization";
    use(memmem(data, size, mark, sizeof mark - 1) ? 1 : 0);
    char out[8192];
    exchange(data, size, out, sizeof out, 200);
    static const char health[] = "GET /v2/health/live HTTP/1.1\r\nHost: x\r\n"
                                 "Connection: close\r\n\r\n";
    size_t n = exchange((const uint8_t *)health, sizeof health - 1, out, sizeof out - 1, 2000);
    out[n] = '\0';
    if (strncmp(out, "HTTP/1.1 200 ", 13) != 0) {
        fprintf(stderr,
                "fuzz_http: the server stopped answering health checks (got %zu bytes: %.200s)\n",
                n, out);
        abort();
    }
    return 0;
}
