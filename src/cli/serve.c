/* serve.c: `batchd serve`. One table drives the flags, their environment variables, the
 * defaults, the bounds and --help, so they cannot drift apart. Precedence: flag >
 * environment > default. Start-up order: read the API key file, block the stop signals and
 * SIGHUP (so every thread inherits the mask and only the loop's signalfd sees them), load ONNX
 * Runtime, load the repository,
 * bind, serve; shutdown runs the same steps backwards. Main thread only. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/backend.h"
#include "cli/cli.h"
#include "gate/gate.h"
#include "ingest/ingest.h"
#include "metrics/metrics.h"
#include "repo/repo.h"
#include "server/server.h"

typedef struct {
    const char *model_repository;
    const char *host;
    int64_t http_port;
    const char *onnxruntime_lib;
    const char *log_level;
    int64_t max_body_bytes;
    int64_t max_buffered_bytes;
    const char *model_control;
    int64_t repository_poll_secs;
    const char *strict_readiness;
    int64_t ws_max_inflight;
    int64_t ws_idle_timeout_secs;
    int64_t max_connections;
    int64_t max_header_bytes;
    int64_t http_timeout_secs;
    int64_t max_decode_bytes;
    int64_t max_image_pixels;
    const char *redis;
    const char *redis_consumer;
    const char *api_keys;
    const char *allow_origin;
    bool metrics_auth;
    const char *rate_limit;
    const char *tls_cert;
    const char *tls_key;
} serve_opts_t;

#define OFF(f) offsetof(serve_opts_t, f)
#define HUGEPAGE_TUNABLE "glibc.malloc.hugetlb=1"
/* Huge pages, and glibc's thresholds fixed where its own would rise to (see
 * bd_cli_hugepages_reexec). */
#define MALLOC_TUNABLES                                                                            \
    HUGEPAGE_TUNABLE ":glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=67108864"
static const bd_cli_opt_t opts_table[] = {
    {"--model-repository", BD_CLI_STR, OFF(model_repository), NULL, 0, 0, "BATCHD_MODEL_REPOSITORY",
     "folder of models: DIR/<model>/<version>/model.onnx (+ optional config.json); required"},
    {"--host", BD_CLI_STR, OFF(host), "127.0.0.1", 0, 0, "BATCHD_HOST",
     "address to listen on (0.0.0.0 for every interface)"},
    {"--http-port", BD_CLI_INT, OFF(http_port), "8000", 0, 65535, "BATCHD_HTTP_PORT",
     "HTTP port; 0 picks a free one (the log says which)"},
    {"--onnxruntime-lib", BD_CLI_STR, OFF(onnxruntime_lib), NULL, 0, 0, "BATCHD_ONNXRUNTIME_LIB",
     "path of libonnxruntime.so.1 (default: the one the setup installed)"},
    {"--log-level", BD_CLI_STR, OFF(log_level), "info", 0, 0, "BATCHD_LOG_LEVEL",
     "debug, info, warn or error"},
    {"--max-body-bytes", BD_CLI_INT, OFF(max_body_bytes), "67108864", 1024, (int64_t)1 << 32,
     "BATCHD_MAX_BODY_BYTES",
     "largest request body accepted, compressed ones once inflated (bigger ones get 413)"},
    {"--max-buffered-bytes", BD_CLI_INT, OFF(max_buffered_bytes), NULL, 0, (int64_t)1 << 40,
     "BATCHD_MAX_BUFFERED_BYTES",
     "request bytes all HTTP connections and WebSockets may hold at once; a body that would "
     "pass it gets 503 from its head (bodies up to 64 KiB always pass), a WebSocket with "
     "requests in flight is not read; 0: no limit; else at least --max-body-bytes. Default: "
     "1 GiB, or a quarter of the memory batchd may use (its cgroup's limit, else the RAM) "
     "when that is less, but at least --max-body-bytes"},
    {"--model-control", BD_CLI_STR, OFF(model_control), "none", 0, 0, "BATCHD_MODEL_CONTROL",
     "none (load every model at start), explicit (POST /v2/repository/models/M/load and "
     "/unload) or poll (rescan the repository folder)"},
    {"--repository-poll-secs", BD_CLI_INT, OFF(repository_poll_secs), "15", 1, 86400,
     "BATCHD_REPOSITORY_POLL_SECS",
     "with --model-control poll: seconds between scans for added, removed and changed models"},
    {"--strict-readiness", BD_CLI_STR, OFF(strict_readiness), "true", 0, 0,
     "BATCHD_STRICT_READINESS",
     "true: GET /v2/health/ready is 200 only while every model is ready (else 503 naming them); "
     "false: 200 while the server runs"},
    {"--ws-max-inflight", BD_CLI_INT, OFF(ws_max_inflight), "128", 1, 65536,
     "BATCHD_WS_MAX_INFLIGHT",
     "requests in flight per WebSocket; past that the socket is not read until replies go out"},
    {"--ws-idle-timeout-secs", BD_CLI_INT, OFF(ws_idle_timeout_secs), "300", 1, 86400,
     "BATCHD_WS_IDLE_TIMEOUT_SECS",
     "close a WebSocket (code 1000) after this long with no frame and no request in flight"},
    {"--max-connections", BD_CLI_INT, OFF(max_connections), "0", 0, 1 << 24,
     "BATCHD_MAX_CONNECTIONS",
     "open client connections before accepting pauses; 0: the descriptor limit less 256 kept "
     "for models, files and Redis"},
    {"--max-header-bytes", BD_CLI_INT, OFF(max_header_bytes), "16384", 1024, 262144,
     "BATCHD_MAX_HEADER_BYTES",
     "largest request line plus headers accepted (bigger ones get 431; URLs over 8 KiB get 414)"},
    {"--http-timeout-secs", BD_CLI_INT, OFF(http_timeout_secs), "10", 1, 3600,
     "BATCHD_HTTP_TIMEOUT_SECS",
     "close an HTTP connection that sends no new request, or stops sending a request's head or "
     "body, for this long"},
    {"--max-decode-bytes", BD_CLI_INT, OFF(max_decode_bytes), "134217728", 1024, (int64_t)1 << 34,
     "BATCHD_MAX_DECODE_BYTES",
     "request body bytes decoded off the event loop at once (bodies over 256 KiB are); past it "
     "503; at least --max-body-bytes"},
    {"--max-image-pixels", BD_CLI_INT, OFF(max_image_pixels), "40000000", 1, (int64_t)1 << 40,
     "BATCHD_MAX_IMAGE_PIXELS",
     "an image (for a model with \"preprocess\") whose header says more pixels gets 400 before "
     "any pixel buffer is allocated; one whose resize to the model's size would take more than 3 "
     "bytes per such pixel (plus the model's input) gets 400 too"},
    {"--redis", BD_CLI_STR, OFF(redis), NULL, 0, 0, "BATCHD_REDIS",
     "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], or unix://[[USER]:PASSWORD@]/PATH[?db=DB] for "
     "a Redis on this machine: ingest Redis Streams for every model whose "
     "config.json has a \"redis\" section (default: off; give a password through "
     "BATCHD_REDIS to keep it off the command line)"},
    {"--redis-consumer", BD_CLI_STR, OFF(redis_consumer), NULL, 0, 0, "BATCHD_REDIS_CONSUMER",
     "this process's consumer name in the Redis consumer groups (default: <hostname>-<pid>); "
     "a restart under the same name re-reads the entries it had not answered"},
    {"--allow-origin", BD_CLI_STR, OFF(allow_origin), NULL, 0, 0, "BATCHD_ALLOW_ORIGIN",
     "web page origins (scheme://host[:port], comma-separated; * for any) whose requests a "
     "browser may send; a request whose Origin is another than the server's own gets 403 "
     "(default: none)"},
    {"--api-keys", BD_CLI_STR, OFF(api_keys), NULL, 0, 0, "BATCHD_API_KEYS",
     "file of '<key> <role>' lines (role infer or admin; # comments): every endpoint but health, "
     "model readiness and /metrics then needs 'Authorization: Bearer <key>'; reloaded on SIGHUP "
     "(default: off)"},
    {"--metrics-auth", BD_CLI_BOOL, OFF(metrics_auth), NULL, 0, 0, "BATCHD_METRICS_AUTH",
     "with --api-keys: /metrics needs a key too"},
    {"--rate-limit", BD_CLI_STR, OFF(rate_limit), NULL, 0, 0, "BATCHD_RATE_LIMIT",
     "RPS[:BURST]: infer requests per second per API key (per client address without keys), "
     "bursts of BURST (default RPS); past it 429 with Retry-After (default: off)"},
    {"--tls-cert", BD_CLI_STR, OFF(tls_cert), NULL, 0, 0, "BATCHD_TLS_CERT",
     "PEM certificate file (the server's certificate, then any intermediates): serve HTTPS and "
     "WSS instead of HTTP and WS; needs --tls-key (default: off)"},
    {"--tls-key", BD_CLI_STR, OFF(tls_key), NULL, 0, 0, "BATCHD_TLS_KEY",
     "PEM private key file of --tls-cert (unencrypted); needs --tls-cert"},
};
static const bd_cli_cmd_t serve_cmd = {
    .usage = "usage: batchd serve --model-repository DIR [flags]\n",
    .opts = opts_table,
    .n_opts = sizeof opts_table / sizeof opts_table[0],
};

/* Exits 0 after printing --help. */
static int parse_opts(int argc, char **argv, serve_opts_t *so)
{
    bd_err_t err = {0};
    int rc = bd_cli_parse(&serve_cmd, argc, argv, so, stdout, &err);
    if (rc == BD_CLI_HELP) {
        exit(0);
    }
    if (rc != 0) {
        fprintf(stderr, "batchd serve: %s\n", err.msg);
        return -1;
    }
    if (!so->model_repository) {
        fprintf(stderr, "batchd serve: --model-repository DIR is required (see --help)\n");
        return -1;
    }
    return 0;
}

static int parse_level(const char *s)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

static int parse_control(const char *s)
{
    static const char *names[] = {"none", "explicit", "poll"};
    static const int modes[] = {BD_MODEL_CONTROL_NONE, BD_MODEL_CONTROL_EXPLICIT,
                                BD_MODEL_CONTROL_POLL};
    for (int i = 0; i < 3; i++) {
        if (strcmp(s, names[i]) == 0) {
            return modes[i];
        }
    }
    return -1;
}

/* Raise the soft descriptor limit to the hard one (a server's connections are descriptors)
 * and derive --max-connections from it when not given. Returns the connection limit. */
static size_t raise_fd_limit(size_t max_connections)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return max_connections;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = {rl.rlim_max, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &want) == 0) {
            rl = want;
        }
    }
    size_t limit = rl.rlim_cur == RLIM_INFINITY ? (size_t)1 << 20 : (size_t)rl.rlim_cur;
    size_t derived = limit > 256 + 64 ? limit - 256 : 64;
    size_t n = max_connections ? max_connections : derived;
    BD_INFO("serve", "descriptors limit=%zu max_connections=%zu", limit, n);
    if (max_connections > derived) {
        BD_WARN("serve",
                "max_connections=%zu is above the descriptor limit %zu less 256; "
                "accepting pauses when descriptors run out",
                max_connections, limit);
    }
    return n;
}

/* --max-buffered-bytes: as given (given >= 0), else 1 GiB, or a quarter of the memory this
 * process may use when that is less, but at least --max-body-bytes. */
static size_t buffered_bytes(int64_t given, int64_t max_body)
{
    const char *from = "ram";
    uint64_t mem = bd_memory_limit("/sys/fs/cgroup", "/proc/self/cgroup", &from);
    uint64_t n = (uint64_t)given;
    if (given < 0) {
        n = mem > 0 && mem / 4 < ((uint64_t)1 << 30) ? mem / 4 : (uint64_t)1 << 30;
        n = n > (uint64_t)max_body ? n : (uint64_t)max_body;
    }
    BD_INFO("serve", "memory limit=%" PRIu64 " from=%s max_buffered_bytes=%" PRIu64, mem, from, n);
    return (size_t)n;
}

/* The Redis ingest rides on the server's loop; the server drives its drain through these. */
static void ingest_stop(void *ctx)
{
    bd_ingest_stop(ctx);
}

static bool ingest_reading(void *ctx)
{
    return bd_ingest_reading(ctx);
}

static bool ingest_busy(void *ctx)
{
    return bd_ingest_busy(ctx);
}

/* Large bodies grow h2o's socket buffers and the request's tensors by tens of MB at a time,
 * and the page faults that touch that memory are then the event loop's largest cost (4 KiB at
 * a time, microseconds each on a VM). When malloc asks for transparent huge pages they drop
 * ~512x: health p99 while four clients post 50 MB JSON bodies went from ~400 ms to ~60 ms
 * (docs/BENCHMARKS.md). glibc raises its mmap and trim thresholds as large blocks are freed
 * (up to 32 and 64 MiB), but not always before a steady load starts: bodies of a few hundred
 * KB one after the other then made the heap grow and shrink by each body (brk twice and fresh
 * pages per request; a 602 KB body cost 260 µs of CPU instead of 150). Those thresholds are set
 * from the start. glibc reads its tunables only at startup, hence the exec. Not when
 * GLIBC_TUNABLES is set (the user's choice; empty turns this off), not under LD_PRELOAD
 * (valgrind and other tools, which an exec would leave behind), and not when the kernel has
 * transparent huge pages off. The kernel names an exec'd process after the file's base name,
 * here "exe": the process after the exec takes back the name it was started as, so that
 * ps -C, pgrep, pkill, pidof and top find it. */
void bd_cli_hugepages_reexec(char **argv)
{
    char name[16] = "";
    if (prctl(PR_GET_NAME, name) == 0 && strcmp(name, "exe") == 0 && argv[0]) {
        const char *base = strrchr(argv[0], '/');
        base = base ? base + 1 : argv[0];
        if (*base) {
            prctl(PR_SET_NAME, base); /* the kernel keeps its first 15 bytes */
        }
    }
    if (getenv("GLIBC_TUNABLES") || getenv("LD_PRELOAD")) {
        return;
    }
    char mode[128] = "";
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    bool on = f && fgets(mode, sizeof mode, f) && !strstr(mode, "[never]");
    if (f) {
        fclose(f);
    }
    if (on && setenv("GLIBC_TUNABLES", MALLOC_TUNABLES, 1) == 0) {
        execv("/proc/self/exe", argv);
        unsetenv("GLIBC_TUNABLES"); /* the exec failed: serve as we are */
    }
}

/* How a string option was given, for its error: the flag, or its environment variable when
 * the command line does not carry the flag. */
static const char *given_as(int argc, char **argv, const char *flag, const char *env)
{
    if (bd_cli_given(argc, argv, flag)) {
        return flag;
    }
    const char *v = getenv(env);
    return v && *v ? env : flag;
}

/* --allow-origin: each comma-separated entry is "*" or an origin as browsers send it,
 * scheme://host[:port]: no path (not even "/"), query, fragment or user, which would never
 * match. Returns the first entry that is not, empty ones included (its length in *len), or
 * NULL. */
static const char *bad_origin(const char *list, size_t *len)
{
    for (const char *p = list; p;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        while (n > 0 && (*p == ' ' || *p == '\t')) {
            p++, n--;
        }
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t')) {
            n--;
        }
        size_t k = 0;
        while (k < n && (isalnum((unsigned char)p[k]) || strchr("+-.", p[k]))) {
            k++; /* the scheme */
        }
        bool origin =
            k > 0 && isalpha((unsigned char)p[0]) && n > k + 3 && memcmp(p + k, "://", 3) == 0;
        for (k += 3; origin && k < n; k++) {
            origin = isalnum((unsigned char)p[k]) || strchr(".-_~:[]", p[k]);
        }
        if (!(n == 1 && p[0] == '*') && !origin) {
            *len = n;
            return p;
        }
        p = end ? end + 1 : NULL;
    }
    return NULL;
}

/* Checks of the text options that have a form: 0, or one sentence naming `name` (the flag or
 * the environment variable the value came from) in err. */
typedef int (*text_check_t)(const char *name, const char *v, bd_err_t *err);

static int check_level(const char *name, const char *v, bd_err_t *err)
{
    return parse_level(v) >= 0
               ? 0
               : bd_err_set(err, BD_EINVAL, "%s must be debug, info, warn or error, got '%s'", name,
                            v);
}

static int check_control(const char *name, const char *v, bd_err_t *err)
{
    return parse_control(v) >= 0
               ? 0
               : bd_err_set(err, BD_EINVAL, "%s must be none, explicit or poll, got '%s'", name, v);
}

static int check_bool(const char *name, const char *v, bd_err_t *err)
{
    bool b;
    return bd_cli_parse_bool(v, &b) == 0
               ? 0
               : bd_err_set(err, BD_EINVAL, "%s must be true or false (or yes/no, 1/0), got '%s'",
                            name, v);
}

static int check_rate(const char *name, const char *v, bd_err_t *err)
{
    double rps, burst;
    return bd_gate_parse_rate(v, name, &rps, &burst, err);
}

static int check_redis(const char *name, const char *v, bd_err_t *err)
{
    bd_redis_url_t url;
    if (bd_ingest_parse_url(v, &url, err) == 0) {
        return 0;
    }
    if (strcmp(name, "--redis") != 0) { /* the sentence names the flag: say where it came from */
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        bd_err_set(err, BD_EINVAL, "%s: %s", name, msg);
    }
    return BD_EINVAL;
}

static int check_consumer(const char *name, const char *v, bd_err_t *err)
{
    return *v && strlen(v) <= 200
               ? 0
               : bd_err_set(err, BD_EINVAL, "%s must be 1 to 200 characters", name);
}

/* An empty file name: `--tls-cert "$CERT"` with CERT unset must not serve plain HTTP. */
static int check_file(const char *name, const char *v, bd_err_t *err)
{
    return *v ? 0 : bd_err_set(err, BD_EINVAL, "%s needs a file; it was given an empty name", name);
}

/* CONFIG.md: a malformed value is refused wherever it comes from, also in an environment
 * variable that a flag replaces. bd_cli_parse checks the typed options as it applies each
 * value; the text options with a form are checked here, the value in use and a replaced
 * one. */
static int check_text_opts(int argc, char **argv, const serve_opts_t *so, bd_err_t *err)
{
    static const struct {
        const char *flag, *env;
        size_t off;
        text_check_t check;
    } rows[] = {
        {"--log-level", "BATCHD_LOG_LEVEL", OFF(log_level), check_level},
        {"--model-control", "BATCHD_MODEL_CONTROL", OFF(model_control), check_control},
        {"--strict-readiness", "BATCHD_STRICT_READINESS", OFF(strict_readiness), check_bool},
        {"--rate-limit", "BATCHD_RATE_LIMIT", OFF(rate_limit), check_rate},
        {"--redis", "BATCHD_REDIS", OFF(redis), check_redis},
        {"--redis-consumer", "BATCHD_REDIS_CONSUMER", OFF(redis_consumer), check_consumer},
        {"--tls-cert", "BATCHD_TLS_CERT", OFF(tls_cert), check_file},
        {"--tls-key", "BATCHD_TLS_KEY", OFF(tls_key), check_file},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const char *v = *(const char *const *)(const void *)((const char *)so + rows[i].off);
        const char *env = getenv(rows[i].env);
        const char *name = given_as(argc, argv, rows[i].flag, rows[i].env);
        if ((env && *env && name == rows[i].flag && rows[i].check(rows[i].env, env, err) != 0) ||
            (v && rows[i].check(name, v, err) != 0)) {
            return BD_EINVAL;
        }
    }
    return 0;
}

/* The options that name things outside: what they name must be there (exit 2 otherwise,
 * before anything starts). */
static int check_outside(int argc, char **argv, const serve_opts_t *so)
{
    const char *repo = given_as(argc, argv, "--model-repository", "BATCHD_MODEL_REPOSITORY");
    struct stat st;
    if (stat(so->model_repository, &st) != 0) {
        fprintf(stderr, "batchd serve: %s '%s': %s\n", repo, so->model_repository, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "batchd serve: %s '%s' is not a folder\n", repo, so->model_repository);
        return -1;
    }
    if (access(so->model_repository, R_OK | X_OK) != 0) {
        fprintf(stderr, "batchd serve: %s '%s' cannot be read: %s\n", repo, so->model_repository,
                strerror(errno));
        return -1;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    int rc = getaddrinfo(so->host, NULL, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "batchd serve: %s '%s' does not resolve: %s\n",
                given_as(argc, argv, "--host", "BATCHD_HOST"), so->host, gai_strerror(rc));
        return -1;
    }
    freeaddrinfo(ai);
    return 0;
}

/* SIGTERM or SIGINT arrived while starting (they are blocked until the loop reads them):
 * bd_repo_open stops loading models, and the server exits 0 without listening. */
static bool stop_pending(void)
{
    sigset_t p;
    return sigpending(&p) == 0 && (sigismember(&p, SIGTERM) == 1 || sigismember(&p, SIGINT) == 1);
}

int bd_cli_serve(int argc, char **argv)
{
    serve_opts_t so = {.max_buffered_bytes = -1}; /* -1: not given (buffered_bytes) */
    if (parse_opts(argc, argv, &so) != 0) {
        return 2;
    }
    bd_err_t gerr = {0};
    if (check_text_opts(argc, argv, &so, &gerr) != 0) {
        fprintf(stderr, "batchd serve: %s\n", gerr.msg);
        return 2;
    }
    int control = parse_control(so.model_control);
    bool strict = true;
    bd_cli_parse_bool(so.strict_readiness, &strict);
    if (check_outside(argc, argv, &so) != 0) {
        return 2;
    }
    bool tls = so.tls_cert != NULL;
    const char *cert_name = given_as(argc, argv, "--tls-cert", "BATCHD_TLS_CERT");
    const char *key_name = given_as(argc, argv, "--tls-key", "BATCHD_TLS_KEY");
    if (tls != (so.tls_key != NULL)) {
        fprintf(stderr,
                "batchd serve: %s is given without %s: they go together; give both for HTTPS, "
                "or neither for plain HTTP\n",
                tls ? cert_name : key_name, tls ? key_name : cert_name);
        return 2;
    }
    size_t bad_len = 0;
    const char *bad = so.allow_origin ? bad_origin(so.allow_origin, &bad_len) : NULL;
    if (bad) {
        fprintf(stderr,
                "batchd serve: %s: '%.*s' is not an origin; expected scheme://host[:port] (as a "
                "browser sends it: no path, no trailing '/'), or * for any\n",
                given_as(argc, argv, "--allow-origin", "BATCHD_ALLOW_ORIGIN"),
                (int)(bad_len > 200 ? 200 : bad_len), bad);
        return 2;
    }
    /* Checks across options name each as it was given: a container set up through the
     * environment is not told of flags it never passed. */
    const char *body = given_as(argc, argv, "--max-body-bytes", "BATCHD_MAX_BODY_BYTES");
    if (so.max_buffered_bytes > 0 && so.max_buffered_bytes < so.max_body_bytes) {
        fprintf(stderr,
                "batchd serve: %s (%lld) must be 0 (no limit) or at least %s (%lld), or the "
                "largest bodies could never be received\n",
                given_as(argc, argv, "--max-buffered-bytes", "BATCHD_MAX_BUFFERED_BYTES"),
                (long long)so.max_buffered_bytes, body, (long long)so.max_body_bytes);
        return 2;
    }
    if (so.max_decode_bytes < so.max_body_bytes) {
        fprintf(stderr,
                "batchd serve: %s (%lld) must be at least %s (%lld), or the largest bodies "
                "could never be decoded\n",
                given_as(argc, argv, "--max-decode-bytes", "BATCHD_MAX_DECODE_BYTES"),
                (long long)so.max_decode_bytes, body, (long long)so.max_body_bytes);
        return 2;
    }
    bd_redis_url_t redis_url = {0};
    char consumer[300];
    if (so.redis) {
        bd_err_t uerr = {0};
        if (bd_ingest_parse_url(so.redis, &redis_url, &uerr) != 0) {
            fprintf(stderr, "batchd serve: %s\n", uerr.msg);
            return 2;
        }
    }
    if (so.redis_consumer) {
        snprintf(consumer, sizeof consumer, "%s", so.redis_consumer);
    } else {
        char host[256] = "batchd";
        if (gethostname(host, sizeof host) != 0) {
            snprintf(host, sizeof host, "batchd");
        }
        host[sizeof host - 1] = '\0';
        snprintf(consumer, sizeof consumer, "%.200s-%ld", host, (long)getpid());
    }
    bd_log_set_level(parse_level(so.log_level));
    if (so.metrics_auth && !so.api_keys) {
        fprintf(stderr,
                "batchd serve: %s needs --api-keys or BATCHD_API_KEYS (the keys /metrics "
                "asks for)\n",
                given_as(argc, argv, "--metrics-auth", "BATCHD_METRICS_AUTH"));
        return 2;
    }
    bd_gate_opts_t go = {.keys_path = so.api_keys, .metrics_auth = so.metrics_auth};
    if (so.rate_limit &&
        bd_gate_parse_rate(so.rate_limit, given_as(argc, argv, "--rate-limit", "BATCHD_RATE_LIMIT"),
                           &go.rps, &go.burst, &gerr) != 0) {
        fprintf(stderr, "batchd serve: %s\n", gerr.msg);
        return 2;
    }
    bd_gate_t *gate = NULL;
    if ((so.api_keys || so.rate_limit) && !(gate = bd_gate_new(&go, bd_clock_real(), &gerr))) {
        fprintf(stderr, "batchd serve: %s\n", gerr.msg);
        return 2;
    }
    /* The TLS files are read here too, before any model loads, so that a bad pair fails the
     * start at once. Owned here; the HTTP front end borrows it. */
    struct ssl_ctx_st *tls_ctx = NULL;
    if (tls && !(tls_ctx = bd_http_tls_new(so.tls_cert, so.tls_key, cert_name, key_name, &gerr))) {
        fprintf(stderr, "batchd serve: %s\n", gerr.msg);
        bd_gate_free(gate);
        return 2;
    }
    /* A port in use fails the start now, not after every model has loaded. */
    if (bd_http_check_listen(so.host, (int)so.http_port, &gerr) != 0) {
        BD_ERROR("serve", "%s", gerr.msg);
        bd_http_tls_free(tls_ctx);
        bd_gate_free(gate);
        return 1;
    }
    if (so.rate_limit) {
        BD_INFO("serve", "rate limit rps=%g burst=%g per=%s", go.rps, go.burst,
                so.api_keys ? "api_key" : "client_address");
    }

    /* SIGHUP too: it reloads the API key file on the loop (and must not end the process). */
    sigset_t stop, blocked;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    blocked = stop;
    sigaddset(&blocked, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &blocked, NULL);
    signal(SIGPIPE, SIG_IGN);

    size_t max_conns = raise_fd_limit((size_t)so.max_connections);
    size_t max_buffered = buffered_bytes(so.max_buffered_bytes, so.max_body_bytes);
    const char *tun = getenv("GLIBC_TUNABLES");
    BD_INFO("serve", "malloc huge_pages=%s",
            tun && strstr(tun, HUGEPAGE_TUNABLE) ? "on" : "off (see docs/CONFIG.md)");

    bd_err_t err = {0};
    if (bd_ort_init(so.onnxruntime_lib, &err) == 0) { /* else it warned: ONNX models fail */
        BD_INFO("serve", "onnxruntime version=%s", bd_ort_version());
    }
    int rc = 1;
    bd_metrics_t *metrics = bd_metrics_new();
    bd_mailbox_t *mailbox = metrics ? bd_mailbox_new(&err) : NULL;
    bd_repo_opts_t ro = {.metrics = metrics,
                         .mailbox = mailbox,
                         .stop_loading = stop_pending,
                         .max_image_pixels = (uint64_t)so.max_image_pixels,
                         .poll_secs =
                             control == BD_MODEL_CONTROL_POLL ? (int)so.repository_poll_secs : 0};
    bd_repo_t *repo = mailbox ? bd_repo_open(so.model_repository, &ro, &err) : NULL;
    bd_server_t *server = NULL;
    bd_ingest_t *ingest = NULL;
    if (!repo) {
        BD_ERROR("serve", "%s", metrics ? err.msg : "out of memory");
        goto done;
    }
    if (stop_pending()) {
        BD_INFO("server", "shutdown during start-up: exiting without listening");
        rc = 0;
        goto done;
    }
    bd_server_opts_t sv = {.http = {.host = so.host,
                                    .port = (int)so.http_port,
                                    .max_body_bytes = (size_t)so.max_body_bytes,
                                    .model_control = (bd_model_control_t)control,
                                    .gate = gate,
                                    .strict_readiness = strict,
                                    .max_connections = max_conns,
                                    .max_header_bytes = (size_t)so.max_header_bytes,
                                    .timeout_secs = (int)so.http_timeout_secs,
                                    .tls = tls_ctx,
                                    .allow_origins = so.allow_origin},
                           .max_buffered_bytes = max_buffered,
                           .max_decode_bytes = (size_t)so.max_decode_bytes,
                           .ws_max_inflight = (size_t)so.ws_max_inflight,
                           .ws_idle_timeout_us = (uint64_t)so.ws_idle_timeout_secs * 1000000u};
    server = bd_server_new(repo, metrics, mailbox, &sv, &err);
    if (!server) {
        BD_ERROR("serve", "%s", err.msg);
        goto done;
    }
    if (so.redis) {
        bd_ingest_opts_t io = {
            .url = redis_url, .consumer = consumer, .max_entry_bytes = (size_t)so.max_body_bytes};
        /* Said before bd_ingest_new, whose first connect to a unix socket that is not there
         * fails at once and logs so: that line follows this one. */
        char where[BD_INGEST_WHERE_MAX];
        BD_INFO("ingest", "redis ingest %s db=%d auth=%s consumer=%s",
                bd_ingest_url_where(&redis_url, NULL, where, sizeof where), redis_url.db,
                !redis_url.password[0] ? "none"
                : redis_url.user[0]    ? "user"
                                       : "password",
                consumer);
        ingest = bd_ingest_new(bd_server_loop(server), bd_server_infer(server), repo, metrics, &io,
                               &err);
        bd_server_frontend_t fe = {ingest, ingest_stop, ingest_reading, ingest_busy};
        if (!ingest || bd_server_add_frontend(server, &fe) != 0) {
            BD_ERROR("serve", "cannot start the Redis ingest: %s", ingest ? "too many" : err.msg);
            goto done;
        }
    }
    BD_INFO("http", "http listening host=%s port=%d models=%zu model_control=%s tls=%s", so.host,
            bd_server_port(server), bd_repo_count(repo), so.model_control, tls ? "on" : "off");
    rc = bd_server_run(server, &stop) == 0 ? 0 : 1;
done:
    bd_ingest_free(ingest); /* before the server: its sockets and timers are on the loop */
    bd_server_free(server);
    /* after the server, which borrowed them */
    bd_gate_free(gate);
    bd_http_tls_free(tls_ctx);
    bd_repo_free(repo); /* drains what the loader still posts to the mailbox */
    bd_mailbox_free(mailbox);
    bd_metrics_free(metrics);
    bd_ort_shutdown();
    return rc;
}
