/* bench.c: `batchd bench`, the load generator's command line. One table drives the flags, their
 * defaults, bounds and --help (parsed by opts.c, like serve's). It reads the model's metadata,
 * builds the request once, runs each level (closed-loop concurrency or open-loop rate) with a
 * progress line on stderr, then prints the table on stdout and writes the --json, --csv and --plot
 * files. Main thread only. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "loadgen/loadgen.h"

#define MAX_LEVELS 256
#define MAX_LEVEL_S 86400 /* the longest a level may last, in seconds (--duration) */

/* Ctrl-C (SIGINT) or SIGTERM while the levels run: the running level ends with what it
 * measured, the rest are skipped, and the report covers what ran. SA_RESETHAND: a second
 * signal ends the process as usual. */
static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
    (void)sig;
    interrupted = 1;
}
#define MAX_MULTI BD_CLI_LIST_MAX

typedef struct {
    const char *url, *model, *version, *api_key, *cacert;
    const char *concurrency, *rate, *distribution;
    uint64_t duration_us, warmup_us, window_us, max_duration_us, timeout_us, max_send_lag_us;
    int64_t requests, batch, stable_windows, max_connections, seed, burst;
    double stable_pct;
    bool binary, quiet;
    const char *data, *json, *csv, *plot, *title;
    bd_cli_list_t shapes, files;
} bench_opts_t;

#define OFF(f) offsetof(bench_opts_t, f)
static const bd_cli_opt_t bopts[] = {
    BD_CLI_SERVER_OPTS(bench_opts_t),
    {"--concurrency", BD_CLI_STR, OFF(concurrency), NULL, 0, 0, NULL,
     "closed loop: comma list of requests kept outstanding, e.g. 1,5,10,25,50 (default 1; "
     "at most 100000)"},
    {"--rate", BD_CLI_STR, OFF(rate), NULL, 0, 0, NULL,
     "open loop: comma list of request rates per second, e.g. 50,100,200 (at most 1e7)"},
    {"--distribution", BD_CLI_STR, OFF(distribution), "constant", 0, 0, NULL,
     "open-loop send times: constant, poisson, or bursty (--burst requests at once)"},
    {"--burst", BD_CLI_INT, OFF(burst), "16", 1, 100000, NULL,
     "bursty: requests sent together; bursts keep the mean --rate"},
    {"--duration", BD_CLI_DUR, OFF(duration_us), "10s", 0.001, MAX_LEVEL_S, NULL,
     "measured time per level (10s, 500ms, 2m)"},
    {"--requests", BD_CLI_INT, OFF(requests), NULL, 1, 1e12, NULL,
     "measure this many requests per level instead of --duration"},
    {"--warmup", BD_CLI_DUR, OFF(warmup_us), "1s", 0, 3600, NULL,
     "unmeasured time before each level"},
    {"--window", BD_CLI_DUR, OFF(window_us), NULL, 0, 3600, NULL,
     "measurement window for the stability rule (default duration/5, 1s with --requests; "
     "10ms at least, the duration at most)"},
    {"--stable-windows", BD_CLI_INT, OFF(stable_windows), "3", 1, 100, NULL,
     "a level is stable when its last this many windows ..."},
    {"--stable-pct", BD_CLI_NUM, OFF(stable_pct), "10", 0.001, 1000, NULL,
     "... are each within this % of their mean throughput"},
    {"--max-duration", BD_CLI_DUR, OFF(max_duration_us), NULL, 0, MAX_LEVEL_S, NULL,
     "keep measuring an unstable level, window by window, up to this long (default: no)"},
    {"--timeout", BD_CLI_DUR, OFF(timeout_us), "10s", 0.001, 3600, NULL, "per-request timeout"},
    {"--max-connections", BD_CLI_INT, OFF(max_connections), "1024", 1, 100000, NULL,
     "open loop: most connections opened"},
    {"--max-send-lag", BD_CLI_DUR, OFF(max_send_lag_us), "10ms", 0.000001, 3600, NULL,
     "open loop: flag the generator as fallen behind when its p99 send lag is above this"},
    {"--batch", BD_CLI_INT, OFF(batch), "1", 1, 1 << 20, NULL, "rows per request (the batch dim)"},
    {"--binary", BD_CLI_BOOL, OFF(binary), NULL, 0, 0, NULL,
     "binary tensors (Triton's extension) for inputs and outputs instead of JSON"},
    {"--data", BD_CLI_STR, OFF(data), "zero", 0, 0, NULL, "input values: zero or random"},
    {"--data-file", BD_CLI_LIST, OFF(files), NULL, 0, 0, NULL,
     "[INPUT=]PATH raw little-endian bytes of one row or the whole batch (repeatable)"},
    {"--shape", BD_CLI_LIST, OFF(shapes), NULL, 0, 0, NULL,
     "[INPUT:]D1,D2,... dims of an input with variable dims, batch dim excluded (repeatable)"},
    {"--seed", BD_CLI_INT, OFF(seed), "1", 0, 9e15, NULL,
     "seed for random data and Poisson send times"},
    {"--json", BD_CLI_STR, OFF(json), NULL, 0, 0, NULL,
     "write the results and configuration as JSON"},
    {"--csv", BD_CLI_STR, OFF(csv), NULL, 0, 0, NULL, "write one CSV row per level"},
    {"--plot", BD_CLI_STR, OFF(plot), NULL, 0, 0, NULL,
     "write an SVG plot of throughput and latency"},
    {"--title", BD_CLI_STR, OFF(title), NULL, 0, 0, NULL, "plot title (default: model and URL)"},
    {"--quiet", BD_CLI_BOOL, OFF(quiet), NULL, 0, 0, NULL, "no progress lines"},
};
static const bd_cli_cmd_t bench_cmd = {
    .usage = "usage: batchd bench --url http[s]://HOST:PORT[/PREFIX] --model M\n"
             "       [--concurrency LIST | --rate LIST] [--duration 10s | --requests N]\n"
             "       [--batch B] [--binary] [--json FILE] [--csv FILE] [--plot FILE.svg]\n",
    .opts = bopts,
    .n_opts = sizeof bopts / sizeof bopts[0],
};

/* Exits 0 after printing --help. */
static int parse_bench_opts(int argc, char **argv, bench_opts_t *o)
{
    bd_err_t err = {0};
    int rc = bd_cli_parse(&bench_cmd, argc, argv, o, stdout, &err);
    if (rc == BD_CLI_HELP) {
        exit(0);
    }
    if (rc != 0) {
        fprintf(stderr, "batchd bench: %s\n", err.msg);
        return -1;
    }
    if (!o->url || !o->model) {
        fprintf(stderr, "batchd bench: --url and --model are required (see --help)\n");
        return -1;
    }
    if (!bd_cli_model_ok("bench", o->model)) {
        return -1;
    }
    if (o->concurrency && o->rate) {
        fprintf(stderr, "batchd bench: give --concurrency or --rate, not both\n");
        return -1;
    }
    /* A flag that would change nothing is refused, not ignored. */
    static const char *const open_only[] = {"--distribution", "--burst", "--max-connections",
                                            "--max-send-lag"};
    for (size_t i = 0; i < sizeof open_only / sizeof open_only[0] && !o->rate; i++) {
        if (bd_cli_given(argc, argv, open_only[i])) {
            fprintf(stderr,
                    "batchd bench: %s applies to the open loop (--rate); the closed loop "
                    "(--concurrency) has no use for it\n",
                    open_only[i]);
            return -1;
        }
    }
    if (bd_cli_given(argc, argv, "--burst") && strcmp(o->distribution, "bursty") != 0) {
        fprintf(stderr, "batchd bench: --burst applies to --distribution bursty\n");
        return -1;
    }
    if (o->requests && bd_cli_given(argc, argv, "--duration")) {
        fprintf(stderr, "batchd bench: give --duration or --requests, not both\n");
        return -1;
    }
    if (o->max_duration_us && o->max_duration_us < o->duration_us && !o->requests) {
        fprintf(stderr, "batchd bench: --max-duration (%gs) is shorter than --duration (%gs)\n",
                (double)o->max_duration_us / 1e6, (double)o->duration_us / 1e6);
        return -1;
    }
    return 0;
}

/* "1,5,10" -> levels; integers only for concurrency. */
static int parse_levels(const char *s, bool integers, double *out, size_t *n)
{
    const char *p = s;
    *n = 0;
    while (*p) {
        char *end = NULL;
        errno = 0;
        double v = strtod(p, &end);
        if (errno || end == p || !(v > 0) || !isfinite(v) || (integers && v != floor(v)) ||
            (*end && (*end != ',' || !end[1])) || *n >= MAX_LEVELS) {
            fprintf(stderr,
                    "batchd bench: %s must be a comma list of up to %d %s above 0, got '%s'\n",
                    integers ? "--concurrency" : "--rate", MAX_LEVELS,
                    integers ? "integers" : "numbers", s);
            return -1;
        }
        if (v > (integers ? BD_LG_MAX_CONCURRENCY : BD_LG_MAX_RATE)) {
            fprintf(stderr, "batchd bench: %s takes values up to %s, got %g\n",
                    integers ? "--concurrency" : "--rate",
                    integers ? "100000 (requests kept outstanding)" : "1e7 (requests/s)", v);
            return -1;
        }
        out[(*n)++] = v;
        p = *end ? end + 1 : end;
    }
    if (*n == 0) {
        fprintf(stderr, "batchd bench: %s needs at least one value\n",
                integers ? "--concurrency" : "--rate");
        return -1;
    }
    return 0;
}

/* 0 when path can be written (it exists, is not a folder and may be, or its folder takes a
 * new file), else the errno saying why not. */
static int writable(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        return EISDIR; /* access() says yes to a folder, and to anything for root */
    }
    if (access(path, F_OK) == 0) {
        return access(path, W_OK) == 0 ? 0 : errno;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        slash[slash == dir ? 1 : 0] = '\0';
    }
    return access(slash ? dir : ".", W_OK | X_OK) == 0 ? 0 : errno;
}

/* The file a report at `path` would be written to, in out[PATH_MAX]: links followed (a link to
 * a file not there yet too) and folders resolved. False when that cannot be told. */
static bool report_target(const char *path, char *out)
{
    char p[2 * PATH_MAX], link[PATH_MAX], dir[PATH_MAX]; /* p: a folder and a link's target */
    snprintf(p, sizeof p, "%s", path);
    for (int hops = 0; hops < 40; hops++) { /* as the kernel's limit on links */
        struct stat st;
        if (realpath(p, out)) {
            return true; /* it is there */
        }
        char *slash = strrchr(p, '/');
        if (slash) {
            *slash = '\0';
        }
        const char *folder = slash ? (*p ? p : "/") : ".";
        const char *name = slash ? slash + 1 : p;
        if (!realpath(folder, dir)) {
            return false;
        }
        size_t dlen = strcmp(dir, "/") == 0 ? 0 : strlen(dir), nlen = strlen(name);
        if (dlen + nlen + 2 > PATH_MAX) {
            return false;
        }
        if (slash) {
            *slash = '/';
        }
        if (lstat(p, &st) != 0 || !S_ISLNK(st.st_mode)) {
            /* not there yet: its folder's path and its name */
            memcpy(out, dir, dlen);
            out[dlen] = '/';
            memcpy(out + dlen + 1, name, nlen + 1);
            return true;
        }
        ssize_t n = readlink(p, link, sizeof link - 1); /* a link to nothing yet */
        if (n <= 0) {
            return false;
        }
        link[n] = '\0';
        if (link[0] == '/') {
            memcpy(p, link, (size_t)n + 1);
        } else {
            snprintf(p, sizeof p, "%s/%s", dir, link);
        }
    }
    return false;
}

/* Whether two report paths name one regular file (the same string, links, or ./x and x),
 * where the second report would overwrite the first (/dev/null twice is fine). */
static bool same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (stat(a, &sa) == 0 && stat(b, &sb) == 0) {
        return S_ISREG(sa.st_mode) && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    }
    char ra[PATH_MAX], rb[PATH_MAX];
    return report_target(a, ra) && report_target(b, rb) && strcmp(ra, rb) == 0;
}

static int write_file(const char *path, const bd_buf_t *b)
{
    if (b->failed) {
        fprintf(stderr, "batchd bench: out of memory writing %s\n", path);
        return -1;
    }
    FILE *f = fopen(path, "w");
    bool ok = f && fwrite(b->data, 1, b->len, f) == b->len;
    int saved = errno;
    if (f && fclose(f) != 0 && ok) {
        ok = false;
        saved = errno;
    }
    if (!ok) {
        fprintf(stderr, "batchd bench: cannot write %s: %s\n", path, strerror(saved));
        return -1;
    }
    return 0;
}

int bd_cli_bench(int argc, char **argv)
{
    static bench_opts_t o;
    memset(&o, 0, sizeof o);
    if (parse_bench_opts(argc, argv, &o) != 0) {
        return 2;
    }
    static double levels[MAX_LEVELS];
    size_t n_levels = 0;
    bool open = o.rate != NULL;
    if (parse_levels(open ? o.rate : (o.concurrency ? o.concurrency : "1"), !open, levels,
                     &n_levels) != 0) {
        return 2;
    }
    bd_lg_run_opts_t ro = {
        .mode = open ? BD_LG_OPEN : BD_LG_CLOSED,
        .warmup_us = o.warmup_us,
        .duration_us = o.duration_us,
        .max_duration_us = o.max_duration_us,
        .requests = (uint64_t)o.requests,
        .window_us = o.window_us,
        .stable_windows = (int)o.stable_windows,
        .stable_pct = o.stable_pct,
        .timeout_us = o.timeout_us,
        .max_connections = (int)o.max_connections,
        .max_send_lag_us = o.max_send_lag_us,
        .seed = (uint64_t)o.seed,
        .burst = (int)o.burst,
        .quiet = o.quiet,
        .interrupt = &interrupted,
    };
    /* An output file that could not be written fails now, not after the run (which it would
     * lose); nothing is created yet. */
    const char *outs[] = {o.json, o.csv, o.plot};
    static const char *const out_flags[] = {"--json", "--csv", "--plot"};
    for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++) {
        if (outs[i] && !*outs[i]) {
            fprintf(stderr, "batchd bench: %s needs a file name, got ''\n", out_flags[i]);
            return 2;
        }
        int e = outs[i] ? writable(outs[i]) : 0;
        if (e) {
            fprintf(stderr, "batchd bench: cannot write %s: %s\n", outs[i], strerror(e));
            return 2;
        }
        for (size_t j = 0; j < i && outs[i]; j++) {
            if (outs[j] && same_file(outs[j], outs[i])) {
                fprintf(stderr,
                        "batchd bench: %s and %s name the same file '%s'; give each report a "
                        "file of its own\n",
                        out_flags[j], out_flags[i], outs[i]);
                return 2;
            }
        }
    }
    if (strcmp(o.distribution, "poisson") == 0) {
        ro.distribution = BD_LG_POISSON;
    } else if (strcmp(o.distribution, "bursty") == 0) {
        ro.distribution = BD_LG_BURSTY;
    } else if (strcmp(o.distribution, "constant") != 0) {
        fprintf(stderr,
                "batchd bench: --distribution must be constant, poisson or bursty, got '%s'\n",
                o.distribution);
        return 2;
    }
    /* Open loop by --requests: N requests take N / rate to schedule, which may be no longer
     * than --duration may be (a level of years, or past the clock's range, would never end or
     * would measure nothing). */
    for (size_t i = 0; open && o.requests && i < n_levels; i++) {
        double secs = (double)o.requests / levels[i];
        if (secs > MAX_LEVEL_S) {
            fprintf(stderr,
                    "batchd bench: --rate %g with --requests %lld takes %gs to send, past the "
                    "%ds a level may last (--duration's limit): raise --rate or lower "
                    "--requests\n",
                    levels[i], (long long)o.requests, secs, MAX_LEVEL_S);
            return 2;
        }
    }
    /* Open loop by --duration: a level whose rate sends less than one request (bursty: one
     * burst) in that time would measure nothing and read as a server that answered nothing. */
    for (size_t i = 0; open && !o.requests && i < n_levels; i++) {
        double per = (ro.distribution == BD_LG_BURSTY ? (double)o.burst : 1.0) / levels[i];
        if ((double)o.duration_us / 1e6 < per) {
            fprintf(stderr,
                    "batchd bench: --rate %g sends %s every %gs, so --duration %gs would "
                    "measure none: give a --duration of at least %gs, or --requests\n",
                    levels[i], ro.distribution == BD_LG_BURSTY ? "a burst" : "a request", per,
                    (double)o.duration_us / 1e6, per);
            return 2;
        }
    }
    bd_lg_request_opts_t rq = {.batch = o.batch, .binary = o.binary, .seed = (uint64_t)o.seed};
    if (strcmp(o.data, "random") == 0) {
        rq.data = BD_LG_DATA_RANDOM;
    } else if (strcmp(o.data, "zero") != 0) {
        fprintf(stderr,
                "batchd bench: --data must be zero or random, got '%s' (files: "
                "--data-file)\n",
                o.data);
        return 2;
    }
    static bd_lg_shape_opt_t shapes[MAX_MULTI];
    static char shape_names[MAX_MULTI][128];
    for (size_t i = 0; i < o.shapes.n; i++) {
        if (bd_lg_parse_shape(o.shapes.v[i], &shapes[i], shape_names[i], sizeof shape_names[i]) !=
            0) {
            fprintf(stderr,
                    "batchd bench: --shape must be [INPUT:]D1,D2,... with dims >= 0, "
                    "got '%s'\n",
                    o.shapes.v[i]);
            return 2;
        }
    }
    static bd_lg_file_opt_t files[MAX_MULTI];
    static char file_names[MAX_MULTI][128];
    for (size_t i = 0; i < o.files.n; i++) {
        const char *eq = strchr(o.files.v[i], '=');
        files[i].path = eq ? eq + 1 : o.files.v[i];
        if (eq) {
            size_t n = (size_t)(eq - o.files.v[i]);
            if (n == 0 || n >= sizeof file_names[i] || !eq[1]) {
                fprintf(stderr, "batchd bench: --data-file must be [INPUT=]PATH, got '%s'\n",
                        o.files.v[i]);
                return 2;
            }
            memcpy(file_names[i], o.files.v[i], n);
            file_names[i][n] = '\0';
            files[i].name = file_names[i];
        }
    }
    rq.shapes = shapes;
    rq.n_shapes = o.shapes.n;
    rq.files = files;
    rq.n_files = o.files.n;

    signal(SIGPIPE, SIG_IGN);
    static bd_lg_target_t t;
    memset(&t, 0, sizeof t);
    bd_err_t err = {0};
    if (bd_lg_parse_url(o.url, &t, &err) != 0) {
        fprintf(stderr, "batchd bench: %s\n", err.msg);
        return 2;
    }
    if (!bd_cli_api_key_ok("bench", o.api_key) || !bd_cli_cacert_loads("bench", o.cacert)) {
        return 2;
    }
    t.api_key = o.api_key;
    t.cacert = o.cacert;
    if (strlen(o.model) >= sizeof t.model || (o.version && strlen(o.version) >= sizeof t.version)) {
        fprintf(stderr, "batchd bench: --model or --model-version is too long\n");
        return 2;
    }
    strcpy(t.model, o.model);
    if (o.version) {
        strcpy(t.version, o.version);
    }
    size_t meta_len = 0;
    char *meta = bd_lg_fetch_metadata(&t, o.timeout_us, &meta_len, &err);
    if (!meta) {
        fprintf(stderr, "batchd bench: cannot read model '%s' metadata: %s\n", o.model, err.msg);
        return 1;
    }
    int rc = bd_lg_build_request(&t, meta, meta_len, &rq, &err);
    free(meta);
    if (rc != 0) {
        fprintf(stderr, "batchd bench: %s\n", err.msg);
        bd_lg_target_dispose(&t);
        return 2;
    }
    if (!o.quiet) {
        fprintf(stderr,
                "bench: model=%s url=%s mode=%s levels=%zu batch=%lld tensors=%s "
                "request_bytes=%zu body_bytes=%zu\n",
                o.model, o.url, open ? "open" : "closed", n_levels, (long long)o.batch,
                o.binary ? "binary" : "json", t.request_len, t.body_len);
    }
    bd_lg_result_t *results = calloc(n_levels, sizeof *results);
    if (!results) {
        fprintf(stderr, "batchd bench: out of memory\n");
        bd_lg_target_dispose(&t);
        return 1;
    }
    size_t done = 0;
    rc = 0;
    struct sigaction sa = {.sa_handler = on_interrupt, .sa_flags = SA_RESETHAND};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    for (size_t i = 0; i < n_levels && !interrupted; i++) {
        if (bd_lg_run_level(&t, &ro, levels[i], &results[i], &err) != 0) {
            fprintf(stderr, "batchd bench: %s\n", err.msg);
            rc = 1;
            break;
        }
        if (results[i].interrupted && results[i].measured_s <= 0) {
            break; /* stopped in its warm-up: nothing to report */
        }
        done++;
        if (!o.quiet) {
            bd_buf_t line;
            bd_buf_init(&line);
            bd_lg_progress_line(&line, &results[i]);
            fprintf(stderr, "%s\n", line.data ? line.data : "");
            bd_buf_dispose(&line);
        }
        if (results[i].server_gone) {
            fprintf(stderr,
                    "batchd bench: the server refused every connection from %.1f s into %s %g "
                    "on (it stopped, or closed its port)%s; exiting 1\n",
                    results[i].gone_at_s, open ? "rate" : "concurrency", results[i].level,
                    i + 1 < n_levels ? "; the levels after it are skipped" : "");
            rc = 1;
            break;
        }
    }
    bd_lg_write_table(stdout, results, done);
    fflush(stdout);

    bd_lg_config_t cfg = {.url = o.url,
                          .target = &t,
                          .run = &ro,
                          .request = &rq,
                          .data_name = o.files.n ? "file" : o.data,
                          .levels = levels,
                          .n_levels = n_levels};
    if (o.json) {
        bd_buf_t b;
        bd_buf_init(&b);
        bd_lg_json(&b, &cfg, results, done);
        rc |= write_file(o.json, &b) ? 1 : 0;
        bd_buf_dispose(&b);
    }
    if (o.csv) {
        bd_buf_t b;
        bd_buf_init(&b);
        bd_lg_csv(&b, results, done);
        rc |= write_file(o.csv, &b) ? 1 : 0;
        bd_buf_dispose(&b);
    }
    if (o.plot) {
        char title[512];
        if (o.title) {
            snprintf(title, sizeof title, "%s", o.title);
        } else {
            snprintf(title, sizeof title, "batchd bench: %s at %s (%s, batch %lld)", o.model, o.url,
                     o.binary ? "binary" : "JSON", (long long)o.batch);
        }
        bd_buf_t b;
        bd_buf_init(&b);
        bd_lg_svg(&b, title, results, done);
        rc |= write_file(o.plot, &b) ? 1 : 0;
        bd_buf_dispose(&b);
    }
    /* A level that got no 2xx reply at all (the server died, or refused every request) fails
     * the run, so a script can tell it from a good one; its figures are in the report. */
    for (size_t i = 0; i < done && rc == 0 && !interrupted; i++) {
        if (results[i].ok == 0 && open && results[i].scheduled == 0) {
            /* Poisson send times left the measured time empty: nothing to judge the server by. */
            fprintf(stderr,
                    "batchd bench: no request was scheduled in the measured time at rate %g; "
                    "exiting 1 (measure longer)\n",
                    results[i].level);
            rc = 1;
        } else if (results[i].ok == 0) {
            fprintf(stderr, "batchd bench: no request succeeded at %s %g; exiting 1\n",
                    open ? "rate" : "concurrency", results[i].level);
            rc = 1;
        }
    }
    free(results);
    bd_lg_target_dispose(&t);
    if (interrupted) {
        fprintf(stderr, "batchd bench: interrupted; the report covers the %zu level%s measured\n",
                done, done == 1 ? "" : "s");
        return 130;
    }
    return rc;
}
