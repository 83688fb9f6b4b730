/* report.c: what `batchd bench` writes: a progress line per level, the terminal table, CSV
 * (one table of columns drives the header and the rows), JSON (the configuration echoed,
 * then one object per level) and a self-contained SVG plot (throughput and p50/p99 latency
 * against concurrency or rate, log x axis when the levels span a wide range).
 *
 * Threads: pure functions over caller-owned results; any thread. */
#include <math.h>
#include <string.h>

#include "loadgen/loadgen.h"

static uint64_t total_errors(const bd_lg_result_t *r)
{
    uint64_t n = 0;
    for (int k = 0; k < BD_LG_ERR_COUNT_; k++) {
        n += r->errors[k];
    }
    return n;
}

static uint64_t http_errors(const bd_lg_result_t *r, int which)
{
    /* which: 429, 503, or 0 for every other status outside 2xx */
    if (which) {
        return r->status[which];
    }
    uint64_t n = 0;
    for (int s = 0; s < BD_LG_STATUS_MAX; s++) {
        if ((s < 200 || s >= 300) && s != 429 && s != 503) {
            n += r->status[s];
        }
    }
    return n;
}

static const char *level_name(const bd_lg_result_t *r)
{
    return r->mode == BD_LG_OPEN ? "rate" : "concurrency";
}

/* ---- progress and table ---------------------------------------------------------------- */

/* A latency in milliseconds with 3 decimals, or "-" when there is none (NaN). */
static const char *ms(char buf[32], double us)
{
    if (!isfinite(us)) {
        return "-";
    }
    snprintf(buf, 32, "%.3f", us / 1e3);
    return buf;
}

void bd_lg_progress_line(bd_buf_t *out, const bd_lg_result_t *r)
{
    char a[32], b[32], c[32];
    bd_buf_printf(out,
                  "bench: %s=%g offered=%.1f/s achieved=%.1f/s p50=%sms p99=%sms max=%sms "
                  "ok=%.2f%% errors=%llu",
                  level_name(r), r->level, r->offered_rps, r->achieved_rps, ms(a, r->lat_p50_us),
                  ms(b, r->lat_p99_us), ms(c, r->lat_max_us), r->success_rate * 100.0,
                  (unsigned long long)(total_errors(r) + r->responses - r->ok));
    bd_buf_puts(out, r->stable ? " stable" : " unstable");
    if (r->interrupted) {
        bd_buf_puts(out, " INTERRUPTED");
    }
    if (r->server_gone) {
        bd_buf_printf(out, " SERVER-GONE (every connect refused from %.1fs on)", r->gone_at_s);
    }
    if (r->fell_behind) {
        bd_buf_printf(out, " GENERATOR-FELL-BEHIND (%s)", r->behind_reason);
    }
}

void bd_lg_write_table(FILE *f, const bd_lg_result_t *rs, size_t n)
{
    if (n == 0) {
        return;
    }
    fprintf(f, "%11s %10s %10s %9s %9s %9s %9s %9s %8s %7s %7s %7s %7s  %s\n", level_name(&rs[0]),
            "offered/s", "achieved/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms",
            "success", "timeout", "refused", "429/503", "other", "notes");
    for (size_t i = 0; i < n; i++) {
        const bd_lg_result_t *r = &rs[i];
        char c[5][32];
        /* other: what the columns before it do not count (connect, reset, protocol errors and
         * non-2xx statuses besides 429 and 503) */
        uint64_t other = total_errors(r) - r->errors[BD_LG_ERR_TIMEOUT] -
                         r->errors[BD_LG_ERR_REFUSED] + http_errors(r, 0);
        fprintf(
            f, "%11g %10.1f %10.1f %9s %9s %9s %9s %9s %7.2f%% %7llu %7llu %7llu %7llu  %s%s%s%s\n",
            r->level, r->offered_rps, r->achieved_rps, ms(c[0], r->lat_p50_us),
            ms(c[1], r->lat_p90_us), ms(c[2], r->lat_p99_us), ms(c[3], r->lat_p999_us),
            ms(c[4], r->lat_max_us), r->success_rate * 100.0,
            (unsigned long long)r->errors[BD_LG_ERR_TIMEOUT],
            (unsigned long long)r->errors[BD_LG_ERR_REFUSED],
            (unsigned long long)(r->status[429] + r->status[503]), (unsigned long long)other,
            r->stable ? "" : "unstable ", r->interrupted ? "interrupted " : "",
            r->server_gone ? "server gone " : "", r->fell_behind ? "generator fell behind" : "");
    }
}

/* ---- CSV ------------------------------------------------------------------------------- */

typedef enum { COL_NUM, COL_U64, COL_BOOL, COL_TEXT } col_kind_t;

typedef struct {
    const char *name;
    col_kind_t kind;
    size_t offset; /* into bd_lg_result_t; SIZE_MAX: computed */
} csv_col_t;

#define R(f) offsetof(bd_lg_result_t, f)
#define COMPUTED SIZE_MAX
static const csv_col_t csv_cols[] = {
    {"mode", COL_TEXT, COMPUTED},
    {"concurrency", COL_NUM, COMPUTED},
    {"rate", COL_NUM, COMPUTED},
    {"offered_rps", COL_NUM, R(offered_rps)},
    {"achieved_rps", COL_NUM, R(achieved_rps)},
    {"goodput_rps", COL_NUM, R(goodput_rps)},
    {"p50_us", COL_NUM, R(lat_p50_us)},
    {"p90_us", COL_NUM, R(lat_p90_us)},
    {"p99_us", COL_NUM, R(lat_p99_us)},
    {"p999_us", COL_NUM, R(lat_p999_us)},
    {"max_us", COL_NUM, R(lat_max_us)},
    {"mean_us", COL_NUM, R(lat_mean_us)},
    {"success_rate", COL_NUM, R(success_rate)},
    {"mean_in_flight", COL_NUM, R(mean_in_flight)},
    {"measured_s", COL_NUM, R(measured_s)},
    {"sent", COL_U64, R(sent)},
    {"responses", COL_U64, R(responses)},
    {"ok", COL_U64, R(ok)},
    {"timeout", COL_U64, R(errors[BD_LG_ERR_TIMEOUT])},
    {"refused", COL_U64, R(errors[BD_LG_ERR_REFUSED])},
    {"connect", COL_U64, R(errors[BD_LG_ERR_CONNECT])},
    {"reset", COL_U64, R(errors[BD_LG_ERR_RESET])},
    {"protocol", COL_U64, R(errors[BD_LG_ERR_PROTOCOL])},
    {"http_429", COL_U64, R(status[429])},
    {"http_503", COL_U64, R(status[503])},
    {"http_other", COL_U64, COMPUTED},
    {"status_counts", COL_TEXT, COMPUTED},
    {"send_lag_p99_us", COL_NUM, R(send_lag_p99_us)},
    {"generator_fell_behind", COL_BOOL, R(fell_behind)},
    {"stable", COL_BOOL, R(stable)},
    {"interrupted", COL_BOOL, R(interrupted)},
    {"server_gone", COL_BOOL, R(server_gone)},
};
#define N_CSV_COLS (sizeof csv_cols / sizeof csv_cols[0])

static void put_num(bd_buf_t *b, double v)
{
    if (!isfinite(v)) {
        bd_buf_puts(b, "null");
    } else if (v == floor(v) && fabs(v) < 1e15) {
        bd_buf_printf(b, "%.0f", v);
    } else {
        bd_buf_printf(b, "%.6g", v);
    }
}

static void status_list(bd_buf_t *b, const bd_lg_result_t *r, bool json)
{
    bool first = true;
    for (int s = 0; s < BD_LG_STATUS_MAX; s++) {
        if (r->status[s]) {
            bd_buf_printf(b, json ? "%s\"%d\":%llu" : "%s%d:%llu", first ? "" : (json ? "," : ";"),
                          s, (unsigned long long)r->status[s]);
            first = false;
        }
    }
}

void bd_lg_csv(bd_buf_t *out, const bd_lg_result_t *rs, size_t n)
{
    for (size_t c = 0; c < N_CSV_COLS; c++) {
        bd_buf_printf(out, c ? ",%s" : "%s", csv_cols[c].name);
    }
    bd_buf_putc(out, '\n');
    for (size_t i = 0; i < n; i++) {
        const bd_lg_result_t *r = &rs[i];
        for (size_t c = 0; c < N_CSV_COLS; c++) {
            const csv_col_t *col = &csv_cols[c];
            const char *name = col->name;
            if (c) {
                bd_buf_putc(out, ',');
            }
            if (col->offset != COMPUTED) {
                const char *p = (const char *)r + col->offset;
                if (col->kind == COL_NUM) {
                    double v = *(const double *)p;
                    if (isfinite(v)) { /* NaN: no value, an empty field */
                        put_num(out, v);
                    }
                } else if (col->kind == COL_U64) {
                    bd_buf_printf(out, "%llu", (unsigned long long)*(const uint64_t *)p);
                } else {
                    bd_buf_puts(out, *(const bool *)p ? "true" : "false");
                }
            } else if (strcmp(name, "mode") == 0) {
                bd_buf_puts(out, r->mode == BD_LG_OPEN ? "open" : "closed");
            } else if (strcmp(name, "concurrency") == 0) {
                if (r->mode == BD_LG_CLOSED) {
                    put_num(out, r->level);
                }
            } else if (strcmp(name, "rate") == 0) {
                if (r->mode == BD_LG_OPEN) {
                    put_num(out, r->level);
                }
            } else if (strcmp(name, "http_other") == 0) {
                bd_buf_printf(out, "%llu", (unsigned long long)http_errors(r, 0));
            } else if (strcmp(name, "status_counts") == 0) {
                status_list(out, r, false);
            }
        }
        bd_buf_putc(out, '\n');
    }
}

/* ---- JSON ------------------------------------------------------------------------------ */

static void jkey(bd_buf_t *b, bool *first, const char *k)
{
    bd_buf_printf(b, "%s\"%s\":", *first ? "" : ",", k);
    *first = false;
}

static void jstr(bd_buf_t *b, const char *s)
{
    if (s) {
        bd_buf_json_string(b, s, strlen(s));
    } else {
        bd_buf_puts(b, "null");
    }
}

static void json_config(bd_buf_t *b, const bd_lg_config_t *cfg, const bd_lg_result_t *rs, size_t n)
{
    const bd_lg_run_opts_t *ro = cfg->run;
    const bd_lg_request_opts_t *rq = cfg->request;
    const bd_lg_target_t *t = cfg->target;
    bool f = true;
    bd_buf_putc(b, '{');
    jkey(b, &f, "url");
    jstr(b, cfg->url);
    if (t) {
        jkey(b, &f, "model");
        jstr(b, t->model);
        jkey(b, &f, "version");
        jstr(b, t->version);
    }
    if (ro) {
        jkey(b, &f, "mode");
        jstr(b, ro->mode == BD_LG_OPEN ? "open" : "closed");
        jkey(b, &f, ro->mode == BD_LG_OPEN ? "rates" : "concurrency");
        bd_buf_putc(b, '[');
        for (size_t i = 0; i < (cfg->levels ? cfg->n_levels : n); i++) {
            if (i) {
                bd_buf_putc(b, ',');
            }
            put_num(b, cfg->levels ? cfg->levels[i] : rs[i].level);
        }
        bd_buf_putc(b, ']');
        jkey(b, &f, "distribution");
        static const char *const dists[] = {"constant", "poisson", "bursty"};
        jstr(b, ro->mode == BD_LG_OPEN ? dists[ro->distribution] : NULL);
        if (ro->mode == BD_LG_OPEN && ro->distribution == BD_LG_BURSTY) {
            jkey(b, &f, "burst");
            put_num(b, ro->burst > 0 ? ro->burst : 16);
        }
        jkey(b, &f, "warmup_s");
        put_num(b, (double)ro->warmup_us / 1e6);
        jkey(b, &f, "duration_s");
        put_num(b, ro->requests ? NAN : (double)ro->duration_us / 1e6);
        jkey(b, &f, "max_duration_s");
        put_num(b, (double)ro->max_duration_us / 1e6);
        jkey(b, &f, "requests");
        bd_buf_printf(b, "%llu", (unsigned long long)ro->requests);
        jkey(b, &f, "window_s");
        put_num(b, (double)bd_lg_window_us(ro) / 1e6); /* the window that ran */
        jkey(b, &f, "stability");
        bd_buf_printf(b, "{\"windows\":%d,\"within_pct\":", ro->stable_windows);
        put_num(b, ro->stable_pct);
        bd_buf_putc(b, '}');
        jkey(b, &f, "timeout_s");
        put_num(b, (double)ro->timeout_us / 1e6);
        jkey(b, &f, "max_connections");
        bd_buf_printf(b, "%d", ro->max_connections);
        jkey(b, &f, "max_send_lag_us");
        bd_buf_printf(b, "%llu", (unsigned long long)ro->max_send_lag_us);
        jkey(b, &f, "seed");
        bd_buf_printf(b, "%llu", (unsigned long long)ro->seed);
    }
    if (rq) {
        jkey(b, &f, "batch");
        bd_buf_printf(b, "%lld", (long long)(rq->batch > 0 ? rq->batch : 1));
        jkey(b, &f, "binary");
        bd_buf_puts(b, rq->binary ? "true" : "false");
        jkey(b, &f, "data");
        jstr(b, cfg->data_name);
        jkey(b, &f, "data_files");
        bd_buf_putc(b, '[');
        for (size_t i = 0; i < rq->n_files; i++) {
            bd_buf_puts(b, i ? ",{\"input\":" : "{\"input\":");
            jstr(b, rq->files[i].name);
            bd_buf_puts(b, ",\"path\":");
            jstr(b, rq->files[i].path);
            bd_buf_putc(b, '}');
        }
        bd_buf_putc(b, ']');
    }
    if (t) {
        jkey(b, &f, "max_batch_size");
        bd_buf_printf(b, "%lld", (long long)t->max_batch_size);
        jkey(b, &f, "inputs");
        bd_buf_putc(b, '[');
        for (size_t i = 0; i < t->n_inputs; i++) {
            const bd_lg_input_desc_t *d = &t->inputs[i];
            bd_buf_puts(b, i ? ",{\"name\":" : "{\"name\":");
            jstr(b, d->name);
            bd_buf_puts(b, ",\"datatype\":");
            jstr(b, d->datatype);
            bd_buf_puts(b, ",\"shape\":[");
            for (int k = 0; k < d->shape.ndim; k++) {
                bd_buf_printf(b, k ? ",%lld" : "%lld", (long long)d->shape.dims[k]);
            }
            bd_buf_puts(b, "]}");
        }
        bd_buf_putc(b, ']');
        jkey(b, &f, "request_body_bytes");
        bd_buf_printf(b, "%zu", t->body_len);
    }
    bd_buf_putc(b, '}');
}

static void json_level(bd_buf_t *b, const bd_lg_result_t *r)
{
    bool f = true;
    bd_buf_putc(b, '{');
    jkey(b, &f, "mode");
    jstr(b, r->mode == BD_LG_OPEN ? "open" : "closed");
    jkey(b, &f, level_name(r));
    put_num(b, r->level);
    static const struct {
        const char *k;
        size_t off;
    } nums[] = {
        {"offered_rps", R(offered_rps)},       {"achieved_rps", R(achieved_rps)},
        {"goodput_rps", R(goodput_rps)},       {"success_rate", R(success_rate)},
        {"mean_in_flight", R(mean_in_flight)}, {"measured_s", R(measured_s)},
    };
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        jkey(b, &f, nums[i].k);
        put_num(b, *(const double *)((const char *)r + nums[i].off));
    }
    jkey(b, &f, "requests_scheduled");
    bd_buf_printf(b, "%llu", (unsigned long long)r->scheduled);
    jkey(b, &f, "requests_sent");
    bd_buf_printf(b, "%llu", (unsigned long long)r->sent);
    jkey(b, &f, "responses");
    bd_buf_printf(b, "%llu", (unsigned long long)r->responses);
    jkey(b, &f, "latency_us");
    bd_buf_puts(b, "{\"min\":");
    put_num(b, r->lat_min_us);
    bd_buf_puts(b, ",\"mean\":");
    put_num(b, r->lat_mean_us);
    bd_buf_puts(b, ",\"p50\":");
    put_num(b, r->lat_p50_us);
    bd_buf_puts(b, ",\"p90\":");
    put_num(b, r->lat_p90_us);
    bd_buf_puts(b, ",\"p99\":");
    put_num(b, r->lat_p99_us);
    bd_buf_puts(b, ",\"p999\":");
    put_num(b, r->lat_p999_us);
    bd_buf_puts(b, ",\"max\":");
    put_num(b, r->lat_max_us);
    bd_buf_putc(b, '}');
    jkey(b, &f, "status_counts");
    bd_buf_putc(b, '{');
    status_list(b, r, true);
    bd_buf_putc(b, '}');
    jkey(b, &f, "errors");
    bd_buf_putc(b, '{');
    for (int k = 0; k < BD_LG_ERR_COUNT_; k++) {
        bd_buf_printf(b, "\"%s\":%llu,", bd_lg_err_name((bd_lg_err_kind_t)k),
                      (unsigned long long)r->errors[k]);
    }
    bd_buf_printf(b, "\"http_429\":%llu,\"http_503\":%llu,\"http_other\":%llu}",
                  (unsigned long long)http_errors(r, 429), (unsigned long long)http_errors(r, 503),
                  (unsigned long long)http_errors(r, 0));
    jkey(b, &f, "generator_fell_behind");
    bd_buf_puts(b, r->fell_behind ? "true" : "false");
    jkey(b, &f, "behind_reason");
    jstr(b, r->fell_behind ? r->behind_reason : NULL);
    jkey(b, &f, "send_lag_us");
    if (r->mode == BD_LG_OPEN) {
        bd_buf_puts(b, "{\"p99\":");
        put_num(b, r->send_lag_p99_us);
        bd_buf_puts(b, ",\"max\":");
        put_num(b, r->send_lag_max_us);
        bd_buf_putc(b, '}');
    } else {
        bd_buf_puts(b, "null");
    }
    jkey(b, &f, "window_rps");
    bd_buf_putc(b, '[');
    for (size_t i = 0; i < r->n_windows; i++) {
        if (i) {
            bd_buf_putc(b, ',');
        }
        put_num(b, round(r->window_rps[i] * 10.0) / 10.0);
    }
    bd_buf_putc(b, ']');
    jkey(b, &f, "stable");
    bd_buf_puts(b, r->stable ? "true" : "false");
    jkey(b, &f, "interrupted");
    bd_buf_puts(b, r->interrupted ? "true" : "false");
    jkey(b, &f, "server_gone");
    bd_buf_puts(b, r->server_gone ? "true" : "false");
    jkey(b, &f, "server_gone_at_s");
    put_num(b, r->server_gone ? round(r->gone_at_s * 1000.0) / 1000.0 : NAN);
    bd_buf_putc(b, '}');
}

void bd_lg_json(bd_buf_t *out, const bd_lg_config_t *cfg, const bd_lg_result_t *rs, size_t n)
{
    bd_buf_printf(out, "{\"tool\":\"batchd bench\",\"version\":\"%s\",\"config\":", BD_VERSION);
    json_config(out, cfg, rs, n);
    bd_buf_puts(out, ",\"levels\":[");
    for (size_t i = 0; i < n; i++) {
        bd_buf_puts(out, i ? ",\n" : "\n");
        json_level(out, &rs[i]);
    }
    bd_buf_puts(out, "]}\n");
}

/* ---- SVG ------------------------------------------------------------------------------- */

#define SVG_W 1000
#define SVG_H 440
#define PANEL_W 400
#define PANEL_H 300
#define PANEL_TOP 70

/* A "nice" upper bound and step for an axis from 0 to `max`. */
static void nice_axis(double max, double *top, double *step)
{
    if (!(max > 0)) {
        max = 1;
    }
    double raw = max / 5.0;
    double mag = pow(10.0, floor(log10(raw)));
    double f = raw / mag;
    double s = f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10;
    *step = s * mag;
    *top = ceil(max / *step) * *step;
}

typedef struct {
    double x0, y0; /* panel's top-left */
    double xmin, xmax;
    bool xlog;
    double ytop;
} panel_t;

static double px(const panel_t *p, double v)
{
    double f;
    if (p->xmax <= p->xmin) {
        f = 0.5;
    } else if (p->xlog) {
        f = (log(v) - log(p->xmin)) / (log(p->xmax) - log(p->xmin));
    } else {
        f = (v - p->xmin) / (p->xmax - p->xmin);
    }
    return p->x0 + 20 + f * (PANEL_W - 40);
}

static double py(const panel_t *p, double v)
{
    return p->y0 + PANEL_H - (v / p->ytop) * PANEL_H;
}

static void fmt_tick(char *buf, size_t cap, double v)
{
    if (v >= 10000 && fmod(v, 1000) == 0) {
        snprintf(buf, cap, "%gk", v / 1000);
    } else {
        snprintf(buf, cap, "%g", v);
    }
}

static void panel_axes(bd_buf_t *b, const panel_t *p, const bd_lg_result_t *rs, size_t n,
                       const char *ylabel, const char *xlabel, double ystep)
{
    bd_buf_printf(b,
                  "<rect x=\"%.1f\" y=\"%.1f\" width=\"%d\" height=\"%d\" fill=\"#fafafa\" "
                  "stroke=\"#999\"/>\n",
                  p->x0, p->y0, PANEL_W, PANEL_H);
    char t[32];
    for (double v = 0; v <= p->ytop * 1.0001; v += ystep) {
        double y = py(p, v);
        fmt_tick(t, sizeof t, v);
        bd_buf_printf(b,
                      "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>"
                      "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                      p->x0, y, p->x0 + PANEL_W, y, p->x0 - 6, y + 4, t);
    }
    for (size_t i = 0; i < n; i++) {
        double x = px(p, rs[i].level);
        fmt_tick(t, sizeof t, rs[i].level);
        bd_buf_printf(b,
                      "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>"
                      "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                      x, p->y0, x, p->y0 + PANEL_H, x, p->y0 + PANEL_H + 16, t);
    }
    bd_buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s%s</text>\n",
                  p->x0 + PANEL_W / 2.0, p->y0 + PANEL_H + 36, xlabel,
                  p->xlog ? " (log scale)" : "");
    bd_buf_printf(b,
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" "
                  "transform=\"rotate(-90 %.1f %.1f)\">%s</text>\n",
                  p->x0 - 58, p->y0 + PANEL_H / 2.0, p->x0 - 58, p->y0 + PANEL_H / 2.0, ylabel);
}

static void series(bd_buf_t *b, const panel_t *p, const bd_lg_result_t *rs, size_t n, size_t off,
                   double scale, const char *color, bool dashed)
{
    bd_buf_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", color,
                  dashed ? " stroke-dasharray=\"6 4\"" : "");
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        double v = *(const double *)((const char *)&rs[i] + off) * scale;
        if (isfinite(v)) { /* a level without replies has no latency point */
            bd_buf_printf(b, "%s%.1f,%.1f", first ? "" : " ", px(p, rs[i].level), py(p, v));
            first = false;
        }
    }
    bd_buf_puts(b, "\"/>\n");
    for (size_t i = 0; i < n; i++) {
        double v = *(const double *)((const char *)&rs[i] + off) * scale;
        if (!isfinite(v)) {
            continue;
        }
        bool bad = !rs[i].stable || rs[i].fell_behind || rs[i].success_rate < 1.0 ||
                   rs[i].interrupted || rs[i].server_gone;
        bd_buf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\" stroke=\"%s\"/>\n",
                      px(p, rs[i].level), py(p, v), bad ? "white" : color, color);
    }
}

static void legend(bd_buf_t *b, double x, double y, const char *color, bool dashed,
                   const char *label)
{
    bd_buf_printf(b,
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                  "stroke-width=\"2\"%s/><text x=\"%.1f\" y=\"%.1f\">%s</text>\n",
                  x, y, x + 24, y, color, dashed ? " stroke-dasharray=\"6 4\"" : "", x + 30, y + 4,
                  label);
}

static void xml_text(bd_buf_t *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<':
            bd_buf_puts(b, "&lt;");
            break;
        case '>':
            bd_buf_puts(b, "&gt;");
            break;
        case '&':
            bd_buf_puts(b, "&amp;");
            break;
        case '"':
            bd_buf_puts(b, "&quot;");
            break;
        default:
            bd_buf_putc(b, *s);
            break;
        }
    }
}

void bd_lg_svg(bd_buf_t *out, const char *title, const bd_lg_result_t *rs, size_t n)
{
    bd_buf_printf(out,
                  "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                  "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n"
                  "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
                  "<text x=\"%d\" y=\"28\" text-anchor=\"middle\" font-size=\"16\" "
                  "font-weight=\"bold\">",
                  SVG_W, SVG_H, SVG_W, SVG_H, SVG_W / 2);
    xml_text(out, title ? title : "batchd bench");
    bd_buf_puts(out, "</text>\n");
    if (n == 0) {
        bd_buf_puts(out, "<text x=\"500\" y=\"200\" text-anchor=\"middle\">no levels</text>\n"
                         "</svg>\n");
        return;
    }
    bool open = rs[0].mode == BD_LG_OPEN;
    double xmin = rs[0].level, xmax = rs[0].level, tmax = 0, lmax = 0;
    for (size_t i = 0; i < n; i++) {
        xmin = fmin(xmin, rs[i].level);
        xmax = fmax(xmax, rs[i].level);
        tmax = fmax(tmax, fmax(rs[i].achieved_rps, open ? rs[i].offered_rps : 0));
        lmax = fmax(lmax, rs[i].lat_p99_us / 1e3);
    }
    const char *xlabel = open ? "offered rate (requests/s)" : "concurrency (requests outstanding)";
    panel_t tp = {.x0 = 90,
                  .y0 = PANEL_TOP,
                  .xmin = xmin,
                  .xmax = xmax,
                  .xlog = xmin > 0 && xmax / xmin >= 8};
    panel_t lp = tp;
    lp.x0 = 90 + PANEL_W + 100;
    double tstep, lstep;
    nice_axis(tmax, &tp.ytop, &tstep);
    nice_axis(lmax, &lp.ytop, &lstep);
    panel_axes(out, &tp, rs, n, "throughput (responses/s)", xlabel, tstep);
    panel_axes(out, &lp, rs, n, "latency (ms)", xlabel, lstep);
    series(out, &tp, rs, n, offsetof(bd_lg_result_t, achieved_rps), 1.0, "#1f77b4", false);
    if (open) {
        series(out, &tp, rs, n, offsetof(bd_lg_result_t, offered_rps), 1.0, "#7f7f7f", true);
    }
    series(out, &lp, rs, n, offsetof(bd_lg_result_t, lat_p50_us), 1e-3, "#2ca02c", false);
    series(out, &lp, rs, n, offsetof(bd_lg_result_t, lat_p99_us), 1e-3, "#d62728", false);
    legend(out, tp.x0 + 10, PANEL_TOP - 14, "#1f77b4", false, "achieved");
    if (open) {
        legend(out, tp.x0 + 120, PANEL_TOP - 14, "#7f7f7f", true, "offered");
    }
    legend(out, lp.x0 + 10, PANEL_TOP - 14, "#2ca02c", false, "p50");
    legend(out, lp.x0 + 90, PANEL_TOP - 14, "#d62728", false, "p99");
    bd_buf_printf(out,
                  "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" fill=\"#555\">hollow "
                  "points: unstable or interrupted level, failed requests, or the "
                  "generator fell behind</text>\n</svg>\n",
                  SVG_W / 2, SVG_H - 8);
}
