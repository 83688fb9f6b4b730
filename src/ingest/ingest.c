/* ingest.c: Redis Streams ingest (see ingest.h).
 *
 * Objects: one pipe per model with a "redis" section; a pipe knows the streams its glob
 * matched (each with its expanded result and dead-letter keys) and spreads them over shards of
 * at most 64 streams, each shard with its own connection, so one blocking XREADGROUP covers 64
 * streams and no read waits behind another's BLOCK. One control connection carries
 * everything else: SCAN, XGROUP CREATE, XAUTOCLAIM, XPENDING, XINFO, the result writes and
 * the re-reads of our own pending entries (ordered behind the writes).
 *
 * An entry (ent_t) lives from its read until its result was written (or it is left pending
 * for a later delivery): in a pipe's backlog while the model's queue has no room, then in the
 * infer layer, then in the result list, then in a write in flight. Every entry held is in a
 * set keyed by (stream, id), so an entry delivered again while it is held (our own pending
 * entries re-read after a reconnect, or claimed back by XAUTOCLAIM) is not run twice.
 *
 * Results are written by one Lua script per batch of entries: for each entry, if it is still
 * pending in its group, XADD its result (MAXLEN ~) and XACK it, atomically. An entry another
 * consumer already answered is skipped (counted as a duplicate avoided), and a batch whose
 * reply was lost with the connection is simply sent again after the reconnect.
 *
 * Timers: a 50 ms tick (reconnects, SCAN every 2 s, claims every claim_idle_ms / 2, gauges,
 * backlog retries) and a zero-delay kick after each event that may let work move (reads,
 * completions, write replies).
 *
 * Threads: the event-loop thread only; the infer layer's completions arrive through its
 * mailbox on this thread. Ownership: the ingest owns pipes, streams, shards, entries and the
 * calls entries hold; every object is freed by bd_ingest_free. */
#include "ingest/ingest.h"
#include "ingest/ingest_internal.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/sched.h"
#include "tensor/tensor.h"

#define SHARD_STREAMS 64
/* Streams read per process, all models together: producers name streams, so they could
 * otherwise open read connections (one per SHARD_STREAMS of a model) without end, out of the
 * 256 descriptors --max-connections keeps aside, and take the ones HTTP accepts with. With
 * this, a process holds at most its models' count plus 64 read connections. Streams past it
 * wait for a place (a deleted stream's), and the log says so. */
#define MAX_STREAMS_READ 4096
#define TICK_MS 50
#define SCAN_EVERY_US 2000000u
#define SCAN_COUNT "1000"
#define CLAIM_COUNT 100
#define WRITE_MAX_ENTS 256
#define WRITE_MAX_BYTES (8u << 20)
#define WRITE_RETRY_US 200000u
#define WRITE_MAX_TRIES 20
#define HOLD_MAX_BYTES (64u << 20) /* entries held per model, by their input bytes */
/* A read asks for at most this many bytes of entries (by the model's row size). Redis builds
 * a whole reply in memory before sending it: replies of tens of MB (64 streams of 600 KB
 * frames) cost it fresh pages every time, 1.8 ms of its CPU per frame against 0.2 ms for
 * replies of a few MB (docs/BENCHMARKS.md). */
#define READ_MAX_BYTES (4u << 20)
#define MAX_FIELDS 1000
/* The drain waits for reads in flight and the backlog while entries still move to the model
 * at least this often, and, once the model's queue is done, for the results while writes go
 * through at least this often. */
#define READ_DRAIN_US 5000000u
#define WRITE_DRAIN_US 10000000u
#define LOG_EVERY_US 5000000u
#define ID_MAX 48
/* Watchdog: a command unanswered this long (plus 3x block_ms on read connections) means the
 * server stopped answering without closing the socket. */
#define REPLY_GRACE_MS 5000

/* One script for every write (results, error results, dead letters): per entry, write and
 * acknowledge only while it is still pending, so nothing is answered twice; an entry that left
 * its stream (a producer's MAXLEN trimmed it) is no longer pending either (XCLAIM and
 * XAUTOCLAIM drop such ids from the pending list), but nobody else can answer it: its result
 * is written all the same. ARGV per entry: stream, group, id, destination, maxlen, field
 * count, fields... Returns per entry 1 (written and acked), 2 (written; the entry had left its
 * stream), 0 (no longer pending: someone answered it) or an error string. */
static const char write_script[] =
    "local out = {}\n"
    "local i = 1\n"
    "local n = #ARGV\n"
    "local function err(e) return type(e) == 'table' and (e.err or 'error') or tostring(e) end\n"
    "while i <= n do\n"
    "  local s, g, id, dst, maxlen = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4]\n"
    "  local first = i + 6\n"
    "  i = first + tonumber(ARGV[i+5])\n"
    "  local okp, p = pcall(redis.call, 'XPENDING', s, g, id, id, 1)\n"
    "  local ret = 0\n"
    "  if not okp then\n"
    "    ret = err(p)\n"
    "  elseif #p > 0 then\n"
    "    ret = 1\n"
    "  else\n"
    "    local okr, r = pcall(redis.call, 'XRANGE', s, id, id)\n"
    "    if okr and #r == 0 then ret = 2 end\n"
    "  end\n"
    "  if ret == 1 or ret == 2 then\n"
    "    local ok, e = pcall(redis.call, 'XADD', dst, 'MAXLEN', '~', maxlen, '*',\n"
    "                        unpack(ARGV, first, i - 1))\n"
    "    if not ok then\n"
    "      ret = err(e)\n"
    "    elseif ret == 1 then\n"
    "      redis.call('XACK', s, g, id)\n"
    "    end\n"
    "  end\n"
    "  out[#out+1] = ret\n"
    "end\n"
    "return out\n";

typedef struct pipe pipe_t;
typedef struct stream stream_t;
typedef struct shard shard_t;
typedef struct ent ent_t;

typedef struct {
    uint64_t ms, seq;
} sid_t;

typedef struct {
    const char *k, *v;
    size_t kl, vl;
} field_t;

typedef enum { K_NONE = 0, K_OK, K_ERROR, K_DEAD } kind_t;

struct ent {
    bd_list_t link; /* pipe backlog, ingest results, a write batch or a claim */
    stream_t *s;
    sid_t id;
    char idstr[ID_MAX];
    size_t idlen;
    kind_t kind;
    bool in_set;
    uint64_t fresh_us; /* delivered, claimed or refreshed to us (refresh_held) */
    bd_call_t *call;   /* in the infer layer, then kept for its outputs until written */
    char *msg;         /* K_ERROR / K_DEAD: the reason (owned) */
    unsigned deliveries;
    unsigned write_tries;
    field_t *meta; /* in this allocation */
    size_t n_meta;
    bd_infer_raw_input_t *in; /* in in_block, until submitted */
    size_t n_in;
    char *in_block;
    /* A single input's bytes: hiredis's reply string, taken over (malloc'd by hiredis 0.14's
     * default reader, which frees a NULL str as nothing), so a frame is not copied here;
     * handed to the call as its body. */
    char *data;
};

struct stream {
    pipe_t *p;
    char *key;
    size_t key_len;
    char *log_key;     /* key as a log field (bd_log_field): quoted when a producer chose spaces */
    char *results_key; /* expanded from the templates; lengths, for keys holding a NUL */
    char *dead_key;
    size_t results_len, dead_len;
    shard_t *shard; /* NULL until its group is ready */
    bool group_ready;
    bool creating;
    bool history; /* the next read re-reads our own pending entries from history_id */
    char history_id[ID_MAX];
    bool claiming;
    size_t claim_reserved; /* entries the XAUTOCLAIM in flight may bring */
    char claim_cursor[ID_MAX];
    bool claim_more;
    bool gone;       /* deleted (a read said NOGROUP naming it): freed once nothing uses it */
    size_t held;     /* its entries held */
    unsigned gauges; /* its gauge commands in flight */
    /* Writing its results: whether the last write failed, the last failure and when (0: none
     * yet). A dead letter of this stream names it. */
    bool write_failing;
    char write_err[128];
    uint64_t write_err_us;
    /* The last time the model failed one of its entries (left pending), and why. */
    char model_err[128];
    uint64_t model_err_us;
};

struct shard {
    pipe_t *p;
    rconn_t conn;
    stream_t *streams[SHARD_STREAMS];
    size_t n;
    bool reading;
    bool hist_read; /* the read in flight re-reads pending entries (on the control connection) */
    size_t reserved;
    uint64_t retry_at_us;
    /* Large entries: reads cover a window of the streams (no BLOCK), moving round them; after
     * a whole round found nothing, one blocking read covers them all. */
    size_t cursor;       /* the next window starts at this stream */
    size_t idle_windows; /* windows in a row that brought nothing */
    bool windowed;       /* the read in flight covers a window */
};

typedef struct {
    uint64_t read, written, acked, errors, dead, reclaimed, duplicates;
} counters_t;

struct pipe {
    bd_ingest_t *ing;
    char *model;
    size_t model_len;
    bd_redis_config_t cfg;
    bool literal;       /* `streams` has no glob characters: a single key */
    stream_t **streams; /* sorted by key */
    size_t n_streams, cap_streams;
    shard_t **shards;
    size_t n_shards;
    size_t next_shard; /* the shard that reads first next time: room goes round them */
    size_t next_claim; /* the stream that claims first next time, likewise */
    bool scanning;
    bool overlap_said; /* a stream another model reads in our group was skipped, and said */
    uint64_t next_claim_us;
    /* backpressure */
    size_t hw;       /* queue depth at which submits and reads stop */
    size_t cap;      /* entries held at most */
    size_t row;      /* bytes of one row of the model's fixed-size inputs (0: unknown) */
    size_t held;     /* entries held (backlog, running, results, writes, claims) */
    size_t reserved; /* entries reads in flight may bring */
    bd_list_t backlog;
    size_t n_backlog;
    counters_t c;
    int64_t pending, lag;
    bool pending_known, lag_known; /* unknown ones are not listed in /metrics */
    int64_t acc_pending, acc_lag;
    bool acc_pending_known, acc_lag_known;
    bool acc_lag_missing; /* a stream's lag was not reported (nil): the sum would be short */
    size_t gauge_wait;
};

/* A claim waiting for the delivery counts of the entries it took. */
typedef struct {
    stream_t *s;
    bd_list_t ents;
    bool reread;   /* our own pending entries, re-read (not claimed): s->claiming is not ours */
    bool counting; /* its XPENDING is in flight (a re-read's counts in ing->rereads) */
} claim_t;

typedef struct {
    bd_ingest_t *ing;
    bd_list_t ents;
} wbatch_t;

typedef struct {
    ent_t **slots;
    size_t cap, n;
} entset_t;

struct bd_ingest {
    h2o_evloop_t *loop;
    bd_infer_t *inf;
    bd_repo_t *repo;
    bd_metrics_t *metrics;
    bd_redis_url_t url;
    raddrs_t addrs; /* url.host's address, or its name's (addrs.res: their lookups) */
    char consumer[256];
    size_t max_entry_bytes;
    rconn_t ctl;
    pipe_t **pipes;
    size_t n_pipes;
    bd_list_t results;
    size_t n_results;
    size_t writes_inflight;
    size_t rereads; /* re-reads of our pending entries waiting for their counts: the drain
                     * waits for them as for a read */
    uint64_t write_retry_at_us;
    entset_t set;
    h2o_timeout_t tick_to, kick_to;
    h2o_timeout_entry_t tick, kick;
    uint64_t next_scan_us;
    bool stopping, freeing;
    uint64_t stop_us;         /* the drain began, or last handed an entry to its model */
    uint64_t writes_since_us; /* the drain waits for writes (bd_ingest_busy), or one went in */
    bool redis_up, ever_up;
    bool down_logged; /* "unreachable" said before the first connection came up */
    uint64_t last_log_us[4];
    size_t n_read; /* streams in a shard, every pipe's: at most MAX_STREAMS_READ */
    /* scratch for building commands */
    const char **av;
    size_t *al;
    size_t an, acap;
    bd_buf_t scratch;
};

enum { LOG_MODEL = 0, LOG_WRITE, LOG_READ, LOG_REDIS };

static void progress(bd_ingest_t *ing);
static void kick(bd_ingest_t *ing);
static void refresh_gauges(pipe_t *p);

static bool log_ok(bd_ingest_t *ing, int which)
{
    uint64_t now = bd_now_us();
    if (now - ing->last_log_us[which] < LOG_EVERY_US && ing->last_log_us[which] != 0) {
        return false;
    }
    ing->last_log_us[which] = now;
    return true;
}

/* ---- ids and the set of entries held ------------------------------------------------------ */

static bool parse_id(const char *s, size_t len, sid_t *id)
{
    uint64_t v[2] = {0, 0};
    int part = 0;
    size_t digits = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '-' && part == 0 && digits > 0) {
            part = 1;
            digits = 0;
        } else if (s[i] >= '0' && s[i] <= '9' && digits < 20) {
            v[part] = v[part] * 10 + (uint64_t)(s[i] - '0');
            digits++;
        } else {
            return false;
        }
    }
    id->ms = v[0];
    id->seq = v[1];
    return digits > 0 && len < ID_MAX;
}

static size_t slot_of(const entset_t *set, const stream_t *s, sid_t id)
{
    uint64_t h = (uint64_t)(uintptr_t)s * 0x9E3779B97F4A7C15ull;
    h ^= id.ms * 0xC2B2AE3D27D4EB4Full;
    h ^= id.seq * 0x165667B19E3779F9ull;
    h ^= h >> 29;
    return (size_t)h & (set->cap - 1);
}

static ent_t *set_find(const entset_t *set, const stream_t *s, sid_t id)
{
    if (set->cap == 0) {
        return NULL;
    }
    for (size_t i = slot_of(set, s, id);; i = (i + 1) & (set->cap - 1)) {
        ent_t *e = set->slots[i];
        if (!e) {
            return NULL;
        }
        if (e->s == s && e->id.ms == id.ms && e->id.seq == id.seq) {
            return e;
        }
    }
}

static void set_place(entset_t *set, ent_t *e)
{
    size_t i = slot_of(set, e->s, e->id);
    while (set->slots[i]) {
        i = (i + 1) & (set->cap - 1);
    }
    set->slots[i] = e;
}

static int set_add(entset_t *set, ent_t *e)
{
    if ((set->n + 1) * 2 > set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 1024;
        ent_t **slots = calloc(cap, sizeof *slots);
        if (!slots) {
            return BD_ENOMEM;
        }
        ent_t **old = set->slots;
        size_t old_cap = set->cap;
        set->slots = slots;
        set->cap = cap;
        for (size_t i = 0; i < old_cap; i++) {
            if (old[i]) {
                set_place(set, old[i]);
            }
        }
        free(old);
    }
    set_place(set, e);
    set->n++;
    e->in_set = true;
    return 0;
}

/* Linear probing with backward-shift deletion: no tombstones. */
static void set_del(entset_t *set, ent_t *e)
{
    if (!e->in_set) {
        return;
    }
    size_t mask = set->cap - 1;
    size_t i = slot_of(set, e->s, e->id);
    while (set->slots[i] != e) {
        i = (i + 1) & mask;
    }
    set->slots[i] = NULL;
    for (size_t j = (i + 1) & mask; set->slots[j]; j = (j + 1) & mask) {
        ent_t *x = set->slots[j];
        size_t home = slot_of(set, x->s, x->id);
        /* x may move into the hole at i unless its home lies cyclically in (i, j]. */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            set->slots[i] = x;
            set->slots[j] = NULL;
            i = j;
        }
    }
    set->n--;
    e->in_set = false;
}

/* ---- entries -------------------------------------------------------------------------------- */

static void ent_release(bd_ingest_t *ing, ent_t *e)
{
    set_del(&ing->set, e);
    bd_list_unlink(&e->link);
    e->s->p->held--;
    e->s->held--;
    bd_call_free(e->call);
    free(e->in_block);
    free(e->data);
    free(e->msg);
    free(e);
}

static void to_results(bd_ingest_t *ing, ent_t *e)
{
    bd_list_unlink(&e->link);
    bd_list_push_back(&ing->results, &e->link);
    ing->n_results++;
}

static void drop_inputs(ent_t *e)
{
    free(e->in_block);
    e->in_block = NULL;
    free(e->data);
    e->data = NULL;
    e->in = NULL;
    e->n_in = 0;
}

static void fail_entry(bd_ingest_t *ing, ent_t *e, kind_t kind, const char *msg)
{
    drop_inputs(e);
    e->kind = kind;
    free(e->msg);
    e->msg = strdup(msg);
    if (!e->msg) {
        ent_release(ing, e); /* out of memory: it stays pending and comes back */
        return;
    }
    if (kind == K_ERROR) {
        e->s->p->c.errors++;
    }
    to_results(ing, e);
}

/* An entry refused while it was read (an input missing, a shape or datatype that does not
 * parse): its error result, counted as the infer layer counts the entries it refuses (outcome
 * "invalid" of batchd_inference_requests_total) besides batchd_redis_errors_total. */
static void bad_entry(bd_ingest_t *ing, ent_t *e)
{
    pipe_t *p = e->s->p;
    bd_model_t *m = NULL;
    p->c.errors++;
    if (bd_repo_find(ing->repo, p->model, p->model_len, "", 0, &m, NULL) == 0) {
        bd_metrics_request(bd_model_metrics(m), BD_PROTO_REDIS, BD_OUTCOME_INVALID);
    }
    to_results(ing, e);
}

static bool field_is(const redisReply *r, const char *s)
{
    size_t n = strlen(s);
    return r->type == REDIS_REPLY_STRING && (size_t)r->len == n && memcmp(r->str, s, n) == 0;
}

/* A field's value for an error sentence: its first 32 bytes, each one that is not printable
 * ASCII (a NUL included) as \xNN, then "..." when there is more. out: at least 4*32+4 bytes. */
static const char *field_text(char *out, size_t cap, const redisReply *r)
{
    size_t o = 0, n = r->len < 32 ? (size_t)r->len : 32;
    for (size_t i = 0; i < n && o + 5 <= cap; i++) {
        unsigned char ch = (unsigned char)r->str[i];
        o += (size_t)snprintf(out + o, cap - o, ch >= 0x20 && ch < 0x7f ? "%c" : "\\x%02x", ch);
    }
    snprintf(out + o, cap - o, "%s", (size_t)r->len > n ? "..." : "");
    return out;
}

/* "1,16" or "[1, 16]" -> shape. */
static bool parse_shape(const char *s, size_t len, bd_shape_t *out)
{
    out->ndim = 0;
    size_t i = 0;
    while (i < len && (s[i] == ' ' || s[i] == '[')) {
        i++;
    }
    while (len > i && (s[len - 1] == ' ' || s[len - 1] == ']')) {
        len--;
    }
    if (i == len) {
        return false;
    }
    while (i < len) {
        if (out->ndim == BD_MAX_DIMS) {
            return false;
        }
        int64_t v = 0;
        size_t digits = 0;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            if (v > ((int64_t)1 << 40)) {
                return false;
            }
            v = v * 10 + (s[i] - '0');
            i++;
            digits++;
        }
        while (i < len && s[i] == ' ') {
            i++;
        }
        if (digits == 0 || v == 0 || (i < len && s[i] != ',')) {
            return false;
        }
        out->dims[out->ndim++] = v;
        if (i < len) {
            i++;
            while (i < len && s[i] == ' ') {
                i++;
            }
            if (i == len) {
                return false;
            }
        }
    }
    return true;
}

typedef struct {
    const redisReply *data, *shape, *dtype;
    const redisReply *data_k, *shape_k, *dtype_k; /* the fields' names, for messages */
} in_fields_t;

/* Which of the n tensors `ios` the field f names: NAME (*what 0), NAME.shape (1) or
 * NAME.datatype (2); -1 for none. */
static int io_field(const bd_io_t *ios, size_t n, const redisReply *f, int *what)
{
    static const char *const suffix[] = {"", ".shape", ".datatype"};
    for (size_t i = 0; i < n; i++) {
        size_t nl = strlen(ios[i].name);
        if ((size_t)f->len < nl || memcmp(f->str, ios[i].name, nl) != 0) {
            continue;
        }
        for (int w = 0; w < 3; w++) {
            size_t sl = strlen(suffix[w]);
            if ((size_t)f->len == nl + sl && memcmp(f->str + nl, suffix[w], sl) == 0) {
                *what = w;
                return (int)i;
            }
        }
    }
    return -1;
}

/* Which input a field belongs to: *what 0 data, 1 shape, 2 datatype. -1: metadata; -2:
 * "shape"/"datatype" of a model with several inputs (applies to each). */
static int classify(const bd_model_config_t *cfg, const redisReply *f, int *what)
{
    static const char *const plain[] = {"input", "shape", "datatype"};
    for (int w = 0; w < 3; w++) {
        if (field_is(f, plain[w])) {
            *what = w;
            return cfg->n_inputs == 1 ? 0 : (w == 0 ? -1 : -2);
        }
    }
    return io_field(cfg->inputs, cfg->n_inputs, f, what);
}

/* Whether metadata field f has a name that results or dead letters give a field of their own:
 * copied, it would be a second field of that name, and a reader that keeps the last one (as a
 * map does) would take the producer's value for batchd's ("status": "ok" on an error). */
static bool result_field(const bd_model_config_t *cfg, const redisReply *f)
{
    static const char *const fixed[] = {"source_stream", "source_id", "model_name", "model_version",
                                        "status",        "error",     "deliveries", "reason"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        if (field_is(f, fixed[i])) {
            return true;
        }
    }
    int what = 0;
    return io_field(cfg->outputs, cfg->n_outputs, f, &what) >= 0;
}

/* Build the entry held for `fields` (a flat field/value array); a bad entry comes back as a
 * K_ERROR entry with its sentence. NULL only when out of memory. */
static ent_t *parse_entry(stream_t *s, sid_t id, const char *idstr, size_t idlen,
                          const redisReply *fields, const bd_model_config_t *cfg)
{
    size_t nf = fields->elements / 2;
    bool too_many = nf > MAX_FIELDS;
    char msg[BD_ERR_MSG_MAX];
    msg[0] = '\0';
    in_fields_t inf[BD_MAX_IO]; /* a model has at most BD_MAX_IO inputs (its load checks) */
    const redisReply *all_shape = NULL, *all_dtype = NULL;
    const redisReply *all_shape_k = NULL, *all_dtype_k = NULL;
    size_t n_in = cfg->n_inputs;
    memset(inf, 0, sizeof inf);
    size_t n_meta = 0, meta_bytes = 0;
    for (size_t i = 0; i < nf && !too_many; i++) {
        const redisReply *k = fields->element[2 * i], *v = fields->element[2 * i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            continue;
        }
        int what = 0;
        int idx = classify(cfg, k, &what);
        if (idx == -1 && result_field(cfg, k)) {
            if (!msg[0]) {
                snprintf(msg, sizeof msg,
                         "the entry has a field '%.64s', a name the result gives a field of its "
                         "own (source_stream, source_id, model_name, model_version, status, "
                         "error, deliveries, reason, and each output's NAME, NAME.shape and "
                         "NAME.datatype); rename it",
                         k->str);
            }
            continue; /* and not copied into the error result */
        }
        if (idx == -1) {
            n_meta++;
            meta_bytes += (size_t)k->len + (size_t)v->len;
            continue;
        }
        const redisReply **slot = idx == -2   ? (what == 1 ? &all_shape : &all_dtype)
                                  : what == 0 ? &inf[idx].data
                                  : what == 1 ? &inf[idx].shape
                                              : &inf[idx].dtype;
        const redisReply **slot_k = idx == -2   ? (what == 1 ? &all_shape_k : &all_dtype_k)
                                    : what == 0 ? &inf[idx].data_k
                                    : what == 1 ? &inf[idx].shape_k
                                                : &inf[idx].dtype_k;
        if (*slot && !msg[0] && (*slot_k)->len == k->len &&
            memcmp((*slot_k)->str, k->str, (size_t)k->len) == 0) {
            snprintf(msg, sizeof msg, "the entry has the field '%.64s' twice", k->str);
        } else if (*slot && !msg[0]) {
            snprintf(msg, sizeof msg,
                     "the entry has the fields '%.64s' and '%.64s', which name the same %s; give "
                     "one of them",
                     (*slot_k)->str, k->str,
                     what == 0   ? "input"
                     : what == 1 ? "shape"
                                 : "datatype");
        }
        *slot = v;
        *slot_k = k;
    }
    /* Metadata is copied into the entry and its result: bounded as the inputs are. */
    bool meta_over = !too_many && meta_bytes > s->p->ing->max_entry_bytes;
    if (too_many) {
        snprintf(msg, sizeof msg, "the entry has %zu fields; at most %d are supported", nf,
                 MAX_FIELDS);
    } else if (meta_over) {
        snprintf(msg, sizeof msg,
                 "the entry's metadata fields are %zu bytes together, over the limit of %zu "
                 "bytes (--max-body-bytes)",
                 meta_bytes, s->p->ing->max_entry_bytes);
    }
    if (too_many || meta_over) {
        n_meta = 0;
        meta_bytes = 0;
    }
    size_t size = sizeof(ent_t) + n_meta * sizeof(field_t) + meta_bytes;
    ent_t *e = calloc(1, size);
    if (!e) {
        return NULL;
    }
    bd_list_init(&e->link);
    e->s = s;
    e->id = id;
    memcpy(e->idstr, idstr, idlen);
    e->idlen = idlen;
    e->meta = (field_t *)(void *)(e + 1);
    char *mp = (char *)(e->meta + n_meta);
    for (size_t i = 0; i < nf && e->n_meta < n_meta; i++) {
        const redisReply *k = fields->element[2 * i], *v = fields->element[2 * i + 1];
        int what = 0;
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
            classify(cfg, k, &what) != -1 || result_field(cfg, k)) {
            continue;
        }
        field_t *f = &e->meta[e->n_meta++];
        memcpy(mp, k->str, (size_t)k->len);
        f->k = mp;
        f->kl = (size_t)k->len;
        mp += k->len;
        memcpy(mp, v->str, (size_t)v->len);
        f->v = mp;
        f->vl = (size_t)v->len;
        mp += v->len;
    }
    /* The inputs: every model input must be there; datatypes and shapes must parse. */
    size_t in_bytes = n_in * sizeof(bd_infer_raw_input_t);
    for (size_t i = 0; i < n_in && !msg[0]; i++) {
        const bd_io_t *io = &cfg->inputs[i];
        char dims[96];
        if (!inf[i].data) {
            if (n_in == 1) {
                snprintf(msg, sizeof msg,
                         "the entry has no 'input' field; expected the raw little-endian bytes "
                         "of input '%s' (%s, dims %s per row)",
                         io->name, bd_dtype_name(io->dtype),
                         bd_shape_str(&io->dims, dims, sizeof dims));
            } else {
                snprintf(msg, sizeof msg,
                         "the entry has no field '%s'; expected the raw little-endian bytes of "
                         "input '%s' (%s, dims %s per row)",
                         io->name, io->name, bd_dtype_name(io->dtype),
                         bd_shape_str(&io->dims, dims, sizeof dims));
            }
            break;
        }
        in_bytes += strlen(io->name) + 1 + (size_t)inf[i].data->len;
    }
    if (!msg[0] && in_bytes > s->p->ing->max_entry_bytes + 65536) {
        snprintf(msg, sizeof msg,
                 "the entry's inputs are %zu bytes, over the limit of %zu bytes "
                 "(--max-body-bytes)",
                 in_bytes, s->p->ing->max_entry_bytes);
    }
    /* One input: its reply string becomes the entry's (see ent_t.data), not copied. */
    bool take = n_in == 1 && !msg[0];
    if (take) {
        in_bytes -= (size_t)inf[0].data->len;
    }
    if (!msg[0]) {
        e->in_block = malloc(in_bytes);
        if (!e->in_block) {
            free(e);
            return NULL;
        }
        e->in = (bd_infer_raw_input_t *)(void *)e->in_block;
        e->n_in = n_in;
        char *ip = (char *)(e->in + n_in);
        for (size_t i = 0; i < n_in && !msg[0]; i++) {
            bd_infer_raw_input_t *in = &e->in[i];
            memset(in, 0, sizeof *in);
            size_t nl = strlen(cfg->inputs[i].name);
            memcpy(ip, cfg->inputs[i].name, nl + 1);
            in->name = ip;
            ip += nl + 1;
            in->byte_size = (size_t)inf[i].data->len;
            if (take) {
                redisReply *v = (redisReply *)inf[i].data;
                e->data = v->str;
                in->data = v->str;
                v->str = NULL;
                v->len = 0;
            } else {
                memcpy(ip, inf[i].data->str, (size_t)inf[i].data->len);
                in->data = ip;
                ip += inf[i].data->len;
            }
            const redisReply *sh = inf[i].shape ? inf[i].shape : all_shape;
            const redisReply *dt = inf[i].dtype ? inf[i].dtype : all_dtype;
            const redisReply *shk = inf[i].shape ? inf[i].shape_k : all_shape_k;
            const redisReply *dtk = inf[i].dtype ? inf[i].dtype_k : all_dtype_k;
            char val[4 * 32 + 4];
            if (sh && !parse_shape(sh->str, (size_t)sh->len, &in->shape)) {
                snprintf(msg, sizeof msg,
                         "field '%.*s' is '%s'; expected comma-separated positive integers "
                         "including the batch dim, such as 1,16",
                         (int)shk->len, shk->str, field_text(val, sizeof val, sh));
            } else if (dt) {
                char name[16];
                snprintf(name, sizeof name, "%.*s", dt->len < 15 ? (int)dt->len : 15, dt->str);
                in->dtype = (size_t)dt->len < 15 && !memchr(dt->str, '\0', (size_t)dt->len)
                                ? bd_dtype_from_name(name)
                                : BD_DT_INVALID;
                if (in->dtype == BD_DT_INVALID) {
                    snprintf(msg, sizeof msg,
                             "field '%.*s' is '%s', which is not a datatype; expected one of "
                             "BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, "
                             "FP32, FP64, BYTES",
                             (int)dtk->len, dtk->str, field_text(val, sizeof val, dt));
                }
            }
        }
    }
    if (msg[0]) {
        drop_inputs(e);
        e->kind = K_ERROR;
        e->msg = strdup(msg);
        if (!e->msg) {
            free(e);
            return NULL;
        }
    }
    return e;
}

/* ---- pipes and their model ------------------------------------------------------------------ */

/* The model's current version when it is ready (valid until back in the loop), with the
 * backpressure bounds from its config; NULL while it is not. */
static bd_model_t *pipe_model(pipe_t *p)
{
    bd_model_t *m = NULL;
    if (bd_repo_find(p->ing->repo, p->model, p->model_len, "", 0, &m, NULL) != 0 ||
        !bd_model_ready(m) || !bd_model_sched(m)) {
        return NULL;
    }
    const bd_config_t *fc = bd_model_full_config(m);
    size_t qmax = 1024;
    if (fc) {
        int lvl = fc->sched.default_priority_level;
        qmax = lvl >= 1 && lvl <= BD_MAX_PRIORITY_LEVELS ? fc->sched.levels[lvl - 1].max_queue_size
                                                         : fc->sched.max_queue_size;
        qmax = qmax ? qmax : 1024;
    }
    p->hw = qmax * 3 / 4 ? qmax * 3 / 4 : 1;
    size_t cap = 2 * p->hw < 256 ? 256 : 2 * p->hw;
    const bd_model_config_t *cfg = bd_model_config(m);
    size_t row = 0;
    for (size_t i = 0; cfg && i < cfg->n_inputs; i++) {
        size_t n = bd_dtype_size(cfg->inputs[i].dtype);
        for (int d = 0; d < cfg->inputs[i].dims.ndim; d++) {
            int64_t v = cfg->inputs[i].dims.dims[d];
            n = v > 0 && n < ((size_t)1 << 40) ? n * (size_t)v : n;
        }
        row += n;
    }
    if (row > 0 && HOLD_MAX_BYTES / row < cap) {
        cap = HOLD_MAX_BYTES / row < 8 ? 8 : HOLD_MAX_BYTES / row;
    }
    p->cap = cap;
    p->row = row;
    return m;
}

/* tmpl with {stream} replaced by the key (which may hold any byte); its length in *len. */
static char *expand(const char *tmpl, const char *key, size_t key_len, size_t *len)
{
    bd_buf_t b;
    bd_buf_init(&b);
    for (const char *t = tmpl; *t;) {
        if (strncmp(t, "{stream}", 8) == 0) {
            bd_buf_append(&b, key, key_len);
            t += 8;
        } else {
            bd_buf_putc(&b, *t++);
        }
    }
    *len = b.len;
    bd_buf_putc(&b, '\0');
    if (b.failed) {
        bd_buf_dispose(&b);
        return NULL;
    }
    size_t n;
    return bd_buf_steal(&b, &n);
}

/* A key that is some pipe's result or dead-letter stream for one of its inputs. */
static bool tmpl_derives(const char *tmpl, const pipe_t *p, const char *key, size_t len)
{
    const char *at = strstr(tmpl, "{stream}");
    if (!at) {
        return strlen(tmpl) == len && memcmp(tmpl, key, len) == 0;
    }
    size_t pre = (size_t)(at - tmpl);
    size_t suf = strlen(at + 8);
    if (len < pre + suf || memcmp(key, tmpl, pre) != 0 ||
        memcmp(key + len - suf, at + 8, suf) != 0) {
        return false;
    }
    return bd_ingest_glob(p->cfg.streams, strlen(p->cfg.streams), key + pre, len - pre - suf);
}

static bool derived(bd_ingest_t *ing, const char *key, size_t len)
{
    for (size_t i = 0; i < ing->n_pipes; i++) {
        pipe_t *p = ing->pipes[i];
        if (tmpl_derives(p->cfg.results, p, key, len) ||
            tmpl_derives(p->cfg.dead_letter, p, key, len)) {
            return true;
        }
    }
    return false;
}

static stream_t *find_stream(const pipe_t *p, const char *key, size_t len, size_t *pos)
{
    size_t lo = 0, hi = p->n_streams;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        stream_t *s = p->streams[mid];
        size_t n = s->key_len < len ? s->key_len : len;
        int c = memcmp(s->key, key, n);
        if (c == 0) {
            c = s->key_len < len ? -1 : s->key_len > len ? 1 : 0;
        }
        if (c == 0) {
            return s;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (pos) {
        *pos = lo;
    }
    return NULL;
}

/* ---- connections' state ---------------------------------------------------------------------- */

/* A connection went down (or never came up): said once per loss, and once when Redis cannot
 * be reached from the start; not when c->refused says why: refused() said the refusal already
 * (a read connection added for new streams while the others are up may be refused by a server
 * at maxclients), and one that follows the others to their address lost nothing. */
static void redis_down(bd_ingest_t *ing, const rconn_t *c)
{
    bool first = !ing->ever_up && !ing->down_logged;
    if ((ing->redis_up || first) && !c->refused[0] && !ing->freeing) {
        ing->down_logged = true;
        char why[BD_LOG_TEXT_MAX], where[BD_INGEST_WHERE_MAX];
        BD_WARN(
            "ingest",
            "redis unreachable %s conn=%s reason=%s; HTTP keeps serving, reconnecting with "
            "backoff",
            bd_ingest_url_where(&ing->url, ing->addrs.res ? c->addr : NULL, where, sizeof where),
            c->name, bd_log_quoted(why, sizeof why, c->last_error));
    }
    ing->redis_up = false;
}

/* A connection came up: once all are, Redis is back (logged once per loss, with the address
 * they are on when the URL names a host). */
static void redis_maybe_up(bd_ingest_t *ing)
{
    if (ing->redis_up || !ing->ctl.ready) {
        return;
    }
    for (size_t i = 0; i < ing->n_pipes; i++) {
        for (size_t k = 0; k < ing->pipes[i]->n_shards; k++) {
            if (!ing->pipes[i]->shards[k]->conn.ready) {
                return;
            }
        }
    }
    char where[BD_INGEST_WHERE_MAX];
    BD_INFO("ingest", "redis %s %s db=%d consumer=%s", ing->ever_up ? "reconnected" : "connected",
            bd_ingest_url_where(&ing->url, ing->addrs.res ? ing->addrs.in_use : NULL, where,
                                sizeof where),
            ing->url.db, ing->consumer);
    ing->redis_up = true;
    ing->ever_up = true;
}

static void on_ctl_state(rconn_t *c, bool up)
{
    bd_ingest_t *ing = c->owner;
    if (!up) {
        redis_down(ing, c);
        for (size_t i = 0; i < ing->n_pipes; i++) {
            /* Unknown until Redis answers again: the last figures would be listed as now. */
            ing->pipes[i]->pending_known = false;
            ing->pipes[i]->lag_known = false;
        }
        return;
    }
    redis_maybe_up(ing);
    ing->next_scan_us = 0;
    ing->write_retry_at_us = 0;
    for (size_t i = 0; i < ing->n_pipes; i++) {
        ing->pipes[i]->next_claim_us = 0;
    }
    kick(ing);
}

static void on_shard_state(rconn_t *c, bool up)
{
    shard_t *sh = c->owner;
    bd_ingest_t *ing = sh->p->ing;
    if (!up) {
        redis_down(ing, c);
        return;
    }
    /* Entries delivered to us whose reply was lost with the old connection are in our
     * pending list: read it again first (the set skips those still held). */
    for (size_t i = 0; i < sh->n; i++) {
        sh->streams[i]->history = true;
        snprintf(sh->streams[i]->history_id, ID_MAX, "0");
    }
    redis_maybe_up(ing);
    kick(ing);
}

/* ---- command building ---------------------------------------------------------------------- */

static bool args_reserve(bd_ingest_t *ing, size_t n)
{
    if (ing->an + n <= ing->acap) {
        return true;
    }
    size_t cap = ing->acap ? ing->acap : 256;
    while (cap < ing->an + n) {
        cap *= 2;
    }
    const char **av = realloc(ing->av, cap * sizeof *av);
    if (!av) {
        return false;
    }
    ing->av = av;
    size_t *al = realloc(ing->al, cap * sizeof *al);
    if (!al) {
        return false;
    }
    ing->al = al;
    ing->acap = cap;
    return true;
}

static void arg(bd_ingest_t *ing, const char *s, size_t len)
{
    ing->av[ing->an] = s;
    ing->al[ing->an] = len;
    ing->an++;
}

static void arg_s(bd_ingest_t *ing, const char *s)
{
    arg(ing, s, strlen(s));
}

/* Text in the scratch buffer (room reserved by the caller, so earlier pointers stay put). */
static const char *scratch_printf(bd_ingest_t *ing, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const char *scratch_printf(bd_ingest_t *ing, size_t *len, const char *fmt, ...)
{
    bd_buf_t *b = &ing->scratch;
    size_t room = b->cap - b->len;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->data + b->len, room, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= room) {
        *len = 0;
        return "";
    }
    const char *s = b->data + b->len;
    b->len += (size_t)n + 1;
    *len = (size_t)n;
    return s;
}

static int send_args(bd_ingest_t *ing, rconn_t *c, redisCallbackFn *fn, void *priv)
{
    if (ing->an > INT32_MAX) {
        return -1;
    }
    return rconn_send(c, fn, priv, (int)ing->an, ing->av, ing->al);
}

/* ---- streams and groups --------------------------------------------------------------------- */

static shard_t *shard_for(pipe_t *p)
{
    for (size_t i = 0; i < p->n_shards; i++) {
        if (p->shards[i]->n < SHARD_STREAMS) {
            return p->shards[i];
        }
    }
    shard_t **arr = realloc(p->shards, (p->n_shards + 1) * sizeof *arr);
    if (!arr) {
        return NULL;
    }
    p->shards = arr;
    shard_t *sh = calloc(1, sizeof *sh);
    if (!sh) {
        return NULL;
    }
    sh->p = p;
    bd_ingest_t *ing = p->ing;
    rconn_init(&sh->conn, ing->loop, &ing->url, &ing->addrs, "read",
               3 * (uint64_t)p->cfg.block_ms + REPLY_GRACE_MS, on_shard_state, sh);
    p->shards[p->n_shards++] = sh;
    rconn_poll(&sh->conn, bd_now_us());
    return sh;
}

/* Give stream `s`, whose group is ready, a place in a shard; one past MAX_STREAMS_READ waits
 * for the next scan, and the log says why. */
static void attach_shard(stream_t *s)
{
    bd_ingest_t *ing = s->p->ing;
    if (ing->n_read >= MAX_STREAMS_READ) {
        if (log_ok(ing, LOG_READ)) {
            BD_WARN("ingest",
                    "stream not read model=%s stream=%s: batchd reads at most %d streams, all "
                    "models together; run another batchd process in the group",
                    s->p->model, s->log_key, MAX_STREAMS_READ);
        }
        return;
    }
    shard_t *sh = shard_for(s->p);
    if (!sh) {
        return;
    }
    ing->n_read++;
    sh->streams[sh->n++] = s;
    s->shard = sh;
    s->history = true;
    snprintf(s->history_id, ID_MAX, "0");
    BD_DEBUG("ingest", "stream added model=%s stream=%s group=%s streams=%zu", s->p->model,
             s->log_key, s->p->cfg.group, s->p->n_streams);
}

static void on_group(redisAsyncContext *ac, void *r_, void *priv)
{
    stream_t *s = priv;
    redisReply *r = r_;
    (void)ac;
    s->creating = false;
    if (!r || (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) != 0)) {
        if (r && log_ok(s->p->ing, LOG_READ)) {
            char why[BD_LOG_TEXT_MAX];
            /* Past maxmemory Redis refuses XGROUP CREATE before it looks for the group. */
            bool full = strncmp(r->str, "OOM", 3) == 0;
            BD_WARN("ingest", "cannot create group stream=%s group=%s reason=%s%s", s->log_key,
                    s->p->cfg.group, bd_log_quoted(why, sizeof why, r->str),
                    full ? "; Redis is past its maxmemory, where it refuses XGROUP CREATE even for "
                           "a group that exists, and the results too; the stream is read once "
                           "Redis has room again"
                         : "");
        }
        return; /* the next scan tries again */
    }
    s->group_ready = true;
    if (!s->shard) {
        attach_shard(s);
        if (!s->shard) {
            return;
        }
    }
    if (!s->p->pending_known) {
        refresh_gauges(s->p); /* the first figures now, not at the next scan */
    }
    kick(s->p->ing);
}

static void create_group(stream_t *s)
{
    bd_ingest_t *ing = s->p->ing;
    if (s->creating || ing->stopping || !args_reserve(ing, 6)) {
        return;
    }
    ing->an = 0;
    arg_s(ing, "XGROUP");
    arg_s(ing, "CREATE");
    arg(ing, s->key, s->key_len);
    arg_s(ing, s->p->cfg.group);
    arg_s(ing, "0");
    arg_s(ing, "MKSTREAM"); /* a named key is waited for; issue 9 asks for it on every one */
    if (send_args(ing, &ing->ctl, on_group, s) == 0) {
        s->creating = true;
    }
}

/* The model other than p's that reads key in p's group, or would. A group hands each entry to
 * one of its consumers, and every model of this process is the same consumer: two models
 * reading a stream in one group would split its entries and re-read each other's pending
 * ones. A model that reads the stream keeps it; otherwise, of the models whose streams match
 * it, the one whose name sorts first reads it, whether it is loaded or not (the same one in
 * every process of the group, whatever order each found the stream in). */
static const pipe_t *group_reader(const pipe_t *p, const char *key, size_t len)
{
    const pipe_t *first = NULL;
    for (size_t i = 0; i < p->ing->n_pipes; i++) {
        const pipe_t *q = p->ing->pipes[i];
        if (q == p || strcmp(q->cfg.group, p->cfg.group) != 0) {
            continue;
        }
        if (find_stream(q, key, len, NULL)) {
            return q;
        }
        if (strcmp(q->model, first ? first->model : p->model) < 0 &&
            bd_ingest_glob(q->cfg.streams, strlen(q->cfg.streams), key, len)) {
            first = q;
        }
    }
    return first;
}

static void add_stream(pipe_t *p, const char *key, size_t len)
{
    size_t pos = 0;
    stream_t *known = find_stream(p, key, len, &pos);
    const pipe_t *other = known ? NULL : group_reader(p, key, len);
    if (other) {
        if (!p->overlap_said) {
            p->overlap_said = true;
            char shown[200];
            BD_WARN("ingest",
                    "stream not read model=%s stream=%s: model %s reads it in the same group "
                    "'%s', which hands each entry to one consumer only; give one of the models "
                    "its own \"group\" to have both read it (said once per model)",
                    p->model, bd_log_field(shown, sizeof shown, key, len), other->model,
                    p->cfg.group);
        }
        return;
    }
    if (known) {
        known->gone = false;
        if (!known->group_ready) {
            create_group(known); /* a stream deleted or whose group went is read again once a
                                  * scan finds it (a literal key, once it is named) */
        } else if (!known->shard) {
            attach_shard(known); /* every read connection was full when its group came */
        }
        return;
    }
    if (p->n_streams == p->cap_streams) {
        size_t cap = p->cap_streams ? p->cap_streams * 2 : 16;
        stream_t **arr = realloc(p->streams, cap * sizeof *arr);
        if (!arr) {
            return;
        }
        p->streams = arr;
        p->cap_streams = cap;
    }
    stream_t *s = calloc(1, sizeof *s);
    if (!s || !(s->key = malloc(len + 1))) {
        free(s);
        return;
    }
    memcpy(s->key, key, len);
    s->key[len] = '\0';
    s->key_len = len;
    s->p = p;
    s->results_key = expand(p->cfg.results, key, len, &s->results_len);
    s->dead_key = expand(p->cfg.dead_letter, key, len, &s->dead_len);
    char shown[200];
    s->log_key = strdup(bd_log_field(shown, sizeof shown, key, len));
    if (!s->results_key || !s->dead_key || !s->log_key) {
        free(s->results_key);
        free(s->dead_key);
        free(s->log_key);
        free(s->key);
        free(s);
        return;
    }
    snprintf(s->claim_cursor, ID_MAX, "0-0");
    memmove(p->streams + pos + 1, p->streams + pos, (p->n_streams - pos) * sizeof *p->streams);
    p->streams[pos] = s;
    p->n_streams++;
    /* Claimed once its group is ready: the claim due at start goes out before the first scan
     * has found any stream, and a stream found later may hold a dead consumer's entries. */
    s->claim_more = true;
    create_group(s);
}

static void on_scan(redisAsyncContext *ac, void *r_, void *priv);

static void send_scan(pipe_t *p, const char *cursor)
{
    bd_ingest_t *ing = p->ing;
    if (!args_reserve(ing, 8)) {
        return;
    }
    ing->an = 0;
    arg_s(ing, "SCAN");
    arg_s(ing, cursor);
    arg_s(ing, "MATCH");
    arg_s(ing, p->cfg.streams);
    arg_s(ing, "TYPE");
    arg_s(ing, "stream");
    arg_s(ing, "COUNT");
    arg_s(ing, SCAN_COUNT);
    p->scanning = send_args(ing, &ing->ctl, on_scan, p) == 0;
}

static void on_scan(redisAsyncContext *ac, void *r_, void *priv)
{
    pipe_t *p = priv;
    redisReply *r = r_;
    bd_ingest_t *ing = p->ing;
    (void)ac;
    p->scanning = false;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
        if (r && r->type == REDIS_REPLY_ERROR && log_ok(ing, LOG_READ)) {
            char why[BD_LOG_TEXT_MAX];
            BD_WARN("ingest", "scan failed pattern=%s reason=%s", p->cfg.streams,
                    bd_log_quoted(why, sizeof why, r->str));
        }
        return;
    }
    const redisReply *keys = r->element[1];
    for (size_t i = 0; i < keys->elements; i++) {
        const redisReply *k = keys->element[i];
        if (k->type == REDIS_REPLY_STRING && !derived(ing, k->str, (size_t)k->len)) {
            add_stream(p, k->str, (size_t)k->len);
        }
    }
    const char *cursor = r->element[0]->str;
    if (strcmp(cursor, "0") != 0 && !ing->stopping) {
        send_scan(p, cursor);
    }
}

/* ---- gauges: pending (XPENDING) and lag (XINFO GROUPS) ---------------------------------- */

static void gauge_done(pipe_t *p)
{
    if (p->gauge_wait > 0 && --p->gauge_wait == 0) {
        p->pending = p->acc_pending;
        p->pending_known = p->acc_pending_known;
        p->lag = p->acc_lag;
        p->lag_known = p->acc_lag_known && !p->acc_lag_missing;
    }
}

static void on_xpending_summary(redisAsyncContext *ac, void *r_, void *priv)
{
    stream_t *s = priv;
    redisReply *r = r_;
    (void)ac;
    s->gauges--;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
        r->element[0]->type == REDIS_REPLY_INTEGER) {
        s->p->acc_pending += r->element[0]->integer;
        s->p->acc_pending_known = true;
    }
    gauge_done(s->p);
}

static void on_xinfo_groups(redisAsyncContext *ac, void *r_, void *priv)
{
    stream_t *s = priv;
    redisReply *r = r_;
    (void)ac;
    s->gauges--;
    bool counted = false;
    for (size_t g = 0; r && r->type == REDIS_REPLY_ARRAY && g < r->elements; g++) {
        const redisReply *grp = r->element[g];
        bool ours = false;
        const redisReply *lag = NULL;
        for (size_t i = 0; grp->type == REDIS_REPLY_ARRAY && i + 1 < grp->elements; i += 2) {
            const redisReply *k = grp->element[i], *v = grp->element[i + 1];
            if (field_is(k, "name") && v->type == REDIS_REPLY_STRING &&
                strcmp(v->str, s->p->cfg.group) == 0) {
                ours = true;
            } else if (field_is(k, "lag")) {
                lag = v;
            }
        }
        if (ours && lag && lag->type == REDIS_REPLY_INTEGER) {
            s->p->acc_lag += lag->integer;
            s->p->acc_lag_known = true;
            counted = true;
        }
    }
    /* Redis gives no lag (nil) after an XDEL or XGROUP SETID, and none before 7.0: the total
     * is unknown then, not the sum of the other streams'. */
    s->p->acc_lag_missing = s->p->acc_lag_missing || !counted;
    gauge_done(s->p);
}

static void refresh_gauges(pipe_t *p)
{
    bd_ingest_t *ing = p->ing;
    if (p->gauge_wait > 0) {
        return;
    }
    p->acc_pending = 0;
    p->acc_lag = 0;
    p->acc_pending_known = false;
    p->acc_lag_known = false;
    p->acc_lag_missing = false;
    for (size_t i = 0; i < p->n_streams; i++) {
        stream_t *s = p->streams[i];
        if (!s->group_ready || !args_reserve(ing, 4)) {
            continue;
        }
        ing->an = 0;
        arg_s(ing, "XPENDING");
        arg(ing, s->key, s->key_len);
        arg_s(ing, p->cfg.group);
        if (send_args(ing, &ing->ctl, on_xpending_summary, s) == 0) {
            p->gauge_wait++;
            s->gauges++;
        }
        ing->an = 0;
        arg_s(ing, "XINFO");
        arg_s(ing, "GROUPS");
        arg(ing, s->key, s->key_len);
        if (send_args(ing, &ing->ctl, on_xinfo_groups, s) == 0) {
            p->gauge_wait++;
            s->gauges++;
        }
    }
}

/* ---- reading --------------------------------------------------------------------------------- */

/* A delivered entry: held and queued, answered at once when bad, skipped when already held.
 * `claim` collects entries taken over by XAUTOCLAIM instead (their delivery counts come
 * next). */
static void take_entry(pipe_t *p, stream_t *s, const redisReply *e, const bd_model_config_t *cfg,
                       claim_t *claim)
{
    bd_ingest_t *ing = p->ing;
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[0]->type != REDIS_REPLY_STRING) {
        return;
    }
    const redisReply *idr = e->element[0], *fields = e->element[1];
    sid_t id;
    if (!parse_id(idr->str, (size_t)idr->len, &id) || set_find(&ing->set, s, id)) {
        return;
    }
    if (fields->type != REDIS_REPLY_ARRAY) {
        /* Deleted after it was delivered: nothing to answer; take it off the pending list. */
        if (args_reserve(ing, 4)) {
            ing->an = 0;
            arg_s(ing, "XACK");
            arg(ing, s->key, s->key_len);
            arg_s(ing, p->cfg.group);
            arg(ing, idr->str, (size_t)idr->len);
            send_args(ing, &ing->ctl, NULL, NULL);
        }
        return;
    }
    ent_t *x = parse_entry(s, id, idr->str, (size_t)idr->len, fields, cfg);
    if (!x) {
        return; /* out of memory: it stays pending and comes back */
    }
    if (set_add(&ing->set, x) != 0) {
        drop_inputs(x);
        free(x->msg);
        free(x);
        return;
    }
    p->held++;
    s->held++;
    x->fresh_us = bd_now_us();
    if (claim) {
        bd_list_push_back(&claim->ents, &x->link);
        return;
    }
    p->c.read++;
    if (x->kind == K_ERROR) {
        bad_entry(ing, x);
    } else {
        bd_list_push_back(&p->backlog, &x->link);
        p->n_backlog++;
    }
}

static bool fetch_counts(claim_t *cl, size_t delivered);

/* The stream a read's NOGROUP error names ("NOGROUP No such key 'KEY' or consumer group 'G'
 * in XREADGROUP with GROUP option": deleted, or its group destroyed), or NULL when the message
 * does not say. */
static stream_t *nogroup_stream(shard_t *sh, const char *msg, size_t len)
{
    static const char head[] = "NOGROUP No such key '";
    char tail[300];
    int tl =
        snprintf(tail, sizeof tail, "' or consumer group '%s' in XREADGROUP", sh->p->cfg.group);
    if (tl < 0 || (size_t)tl >= sizeof tail || len < sizeof head - 1 ||
        memcmp(msg, head, sizeof head - 1) != 0) {
        return NULL;
    }
    const char *key = msg + sizeof head - 1;
    size_t rest = len - (size_t)(key - msg);
    for (size_t i = 0; i < sh->n; i++) {
        stream_t *s = sh->streams[i];
        /* Redis prints the key with %s (cut at a NUL) and CR and LF as spaces. */
        size_t n = strnlen(s->key, s->key_len);
        bool same = rest >= n + (size_t)tl && memcmp(key + n, tail, (size_t)tl) == 0;
        for (size_t k = 0; same && k < n; k++) {
            char c = s->key[k] == '\r' || s->key[k] == '\n' ? ' ' : s->key[k];
            same = key[k] == c;
        }
        if (same) {
            return s;
        }
    }
    return NULL;
}

static void on_read(redisAsyncContext *ac, void *r_, void *priv)
{
    shard_t *sh = priv;
    pipe_t *p = sh->p;
    bd_ingest_t *ing = p->ing;
    redisReply *r = r_;
    (void)ac;
    sh->reading = false;
    if (sh->windowed) {
        bool got = r && r->type == REDIS_REPLY_ARRAY && r->elements > 0;
        sh->idle_windows = got ? 0 : sh->idle_windows + 1;
    } else if (r && r->type == REDIS_REPLY_ARRAY && r->elements > 0) {
        sh->idle_windows = 0;
    }
    p->reserved -= sh->reserved;
    sh->reserved = 0;
    if (!r) {
        return; /* connection lost: our pending entries are read again from history_id */
    }
    if (r->type == REDIS_REPLY_ERROR) {
        if (log_ok(ing, LOG_READ)) {
            char why[BD_LOG_TEXT_MAX];
            BD_WARN("ingest", "read failed model=%s reason=%s", p->model,
                    bd_log_quoted(why, sizeof why, r->str));
        }
        /* A stream deleted under a blocking read ends it with UNBLOCKED; the next read names
         * it (NOGROUP) and goes on without it, both at once. Other errors wait a little. */
        bool at_once = strncmp(r->str, "UNBLOCKED", 9) == 0;
        if (strncmp(r->str, "NOGROUP", 7) == 0) {
            stream_t *gone = nogroup_stream(sh, r->str, (size_t)r->len);
            for (size_t i = 0; i < sh->n; i++) {
                if (!gone || sh->streams[i] == gone) {
                    sh->streams[i]->group_ready = false; /* recreated once a scan finds it */
                }
            }
            if (gone) {
                gone->gone = true; /* freed by the next scan, unless it is back */
            }
            at_once = gone != NULL;
        } else if (strncmp(r->str, "WRONGTYPE", 9) == 0) {
            /* A key of the shard is no longer a stream (deleted and set again), and Redis does
             * not say which: every one waits for the next scan, which finds the streams (and
             * reads them again) but not that key (freed). */
            for (size_t i = 0; i < sh->n; i++) {
                sh->streams[i]->group_ready = false;
                sh->streams[i]->gone = true;
            }
        }
        sh->retry_at_us = at_once ? 0 : bd_now_us() + 200000;
        kick(ing);
        return;
    }
    bd_model_t *m = NULL;
    const bd_model_config_t *cfg = NULL;
    if (r->type == REDIS_REPLY_ARRAY) {
        m = pipe_model(p);
        cfg = m ? bd_model_config(m) : NULL;
        if (!cfg && r->elements > 0) {
            /* The model went while the read was out: what it delivered is in our pending
             * list; read that again once the model is back, not claim_idle_ms later. */
            for (size_t i = 0; i < sh->n; i++) {
                sh->streams[i]->history = true;
                snprintf(sh->streams[i]->history_id, ID_MAX, "0");
            }
        }
    }
    for (size_t i = 0; cfg && i < r->elements; i++) {
        const redisReply *se = r->element[i];
        if (se->type != REDIS_REPLY_ARRAY || se->elements != 2 ||
            se->element[0]->type != REDIS_REPLY_STRING ||
            se->element[1]->type != REDIS_REPLY_ARRAY) {
            continue;
        }
        stream_t *s = NULL;
        for (size_t k = 0; k < sh->n && !s; k++) {
            if (sh->streams[k]->key_len == (size_t)se->element[0]->len &&
                memcmp(sh->streams[k]->key, se->element[0]->str, sh->streams[k]->key_len) == 0) {
                s = sh->streams[k];
            }
        }
        if (!s) {
            continue;
        }
        const redisReply *ents = se->element[1];
        bool hist = sh->hist_read && s->history;
        if (hist && ents->elements == 0) {
            s->history = false; /* our pending list is read to its end: new entries next */
        }
        /* Re-read entries were delivered before: their counts decide (fetch_counts). */
        claim_t *cl = hist && ents->elements ? calloc(1, sizeof *cl) : NULL;
        if (cl) {
            cl->s = s;
            cl->reread = true;
            bd_list_init(&cl->ents);
        } else if (hist) {
            continue; /* out of memory: still pending, re-read later */
        }
        for (size_t k = 0; k < ents->elements; k++) {
            const redisReply *e = ents->element[k];
            if (hist && e->type == REDIS_REPLY_ARRAY && e->elements == 2 &&
                e->element[0]->type == REDIS_REPLY_STRING && e->element[0]->len < ID_MAX) {
                memcpy(s->history_id, e->element[0]->str, (size_t)e->element[0]->len);
                s->history_id[e->element[0]->len] = '\0';
            }
            take_entry(p, s, e, cfg, cl);
        }
        if (cl && bd_list_empty(&cl->ents)) {
            free(cl);
        } else if (cl) {
            fetch_counts(cl, ents->elements);
        }
    }
    kick(ing);
}

/* Entries one read of a shard may reserve. Reads share all but a claim's room of the pipe's
 * cap, and each shard may take at most its part of that, so a blocking read on streams with
 * nothing to read never holds the room the other shards and the claims need. */
static size_t read_budget(const pipe_t *p)
{
    size_t claims = p->cap / 4 < CLAIM_COUNT ? p->cap / 4 : CLAIM_COUNT;
    size_t reads = p->cap - claims;
    size_t share = p->n_shards > 0 ? reads / p->n_shards : reads;
    size_t used = p->held + p->reserved;
    size_t room = used < reads ? reads - used : 0;
    share = share > 0 ? share : 1;
    return room < share ? room : share;
}

static void maybe_read(shard_t *sh, bd_model_t *m)
{
    pipe_t *p = sh->p;
    bd_ingest_t *ing = p->ing;
    /* Our own pending entries are re-read on the control connection, behind the result
     * writes sent before: a write acks an entry either before the read runs (the read does not
     * return it) or after its reply arrived (the entry is still held: skipped). On the shard's
     * own connection a reply could come in after the write's and run the entry again. */
    bool hist = false;
    for (size_t i = 0; i < sh->n && !hist; i++) {
        hist = sh->streams[i]->group_ready && sh->streams[i]->history;
    }
    rconn_t *conn = hist ? &ing->ctl : &sh->conn;
    if (sh->reading || !conn->ready || ing->stopping || bd_now_us() < sh->retry_at_us) {
        return;
    }
    if (bd_sched_queue_depth(bd_model_sched(m)) >= p->hw) {
        return; /* the model's queue is near full: read nothing until it drains */
    }
    size_t k = 0;
    for (size_t i = 0; i < sh->n; i++) {
        k += sh->streams[i]->group_ready && (!hist || sh->streams[i]->history);
    }
    size_t budget = read_budget(p);
    if (k == 0 || budget == 0) {
        return;
    }
    /* Entries this read may bring: its budget, and a reply near READ_MAX_BYTES. Past k of them,
     * `count` per stream; fewer, a window of the streams with one entry each, moving round
     * them without BLOCK; once a whole round found nothing, one blocking read over all of them
     * (or, when the budget is smaller than the shard, over the next window). */
    size_t fit = p->row > 0 ? READ_MAX_BYTES / p->row : SIZE_MAX;
    size_t lim = budget < fit ? budget : fit;
    lim = lim > 0 ? lim : 1;
    size_t count = lim / k < (size_t)p->cfg.read_count ? lim / k : (size_t)p->cfg.read_count;
    size_t w = k;
    bool block = !hist;
    if (count == 0) {
        count = 1;
        if (sh->idle_windows < (k + lim - 1) / lim) {
            w = lim;
            block = false;
        } else {
            w = budget < k ? budget : k;
        }
    }
    bool windowed = w < k;
    if (!args_reserve(ing, 9 + 2 * k)) {
        return;
    }
    bd_buf_reset(&ing->scratch);
    if (bd_buf_reserve(&ing->scratch, 64) != 0) {
        return;
    }
    size_t cl = 0, bl = 0;
    const char *cs = scratch_printf(ing, &cl, "%zu", count);
    const char *bs = scratch_printf(ing, &bl, "%d", p->cfg.block_ms);
    ing->an = 0;
    arg_s(ing, "XREADGROUP");
    arg_s(ing, "GROUP");
    arg_s(ing, p->cfg.group);
    arg_s(ing, ing->consumer);
    arg_s(ing, "COUNT");
    arg(ing, cs, cl);
    if (block) {
        arg_s(ing, "BLOCK");
        arg(ing, bs, bl);
    }
    arg_s(ing, "STREAMS");
    /* The ready streams from the cursor on, w of them: their keys, then their ids. */
    stream_t *sel[SHARD_STREAMS];
    size_t n_sel = 0, start = windowed ? sh->cursor % sh->n : 0;
    for (size_t j = 0; j < sh->n && n_sel < w; j++) {
        stream_t *s = sh->streams[(start + j) % sh->n];
        if (s->group_ready && (!hist || s->history)) {
            sel[n_sel++] = s;
            sh->cursor = (start + j + 1) % sh->n;
        }
    }
    for (size_t j = 0; j < n_sel; j++) {
        arg(ing, sel[j]->key, sel[j]->key_len);
    }
    for (size_t j = 0; j < n_sel; j++) {
        arg_s(ing, hist ? sel[j]->history_id : ">");
    }
    if (send_args(ing, conn, on_read, sh) == 0) {
        sh->reading = true;
        sh->hist_read = hist;
        sh->windowed = windowed;
        sh->reserved = count * w;
        p->reserved += sh->reserved;
    }
}

/* ---- claims: XAUTOCLAIM, then the delivery counts (XPENDING) ------------------------------- */

static void on_claim_counts(redisAsyncContext *ac, void *r_, void *priv)
{
    claim_t *cl = priv;
    stream_t *s = cl->s;
    pipe_t *p = s->p;
    bd_ingest_t *ing = p->ing;
    redisReply *r = r_;
    (void)ac;
    if (!cl->reread) {
        s->claiming = false;
    } else if (cl->counting) {
        ing->rereads--;
    }
    for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        const redisReply *x = r->element[i];
        sid_t id;
        if (x->type != REDIS_REPLY_ARRAY || x->elements < 4 ||
            x->element[0]->type != REDIS_REPLY_STRING ||
            x->element[3]->type != REDIS_REPLY_INTEGER ||
            !parse_id(x->element[0]->str, (size_t)x->element[0]->len, &id)) {
            continue;
        }
        ent_t *e = set_find(&ing->set, s, id);
        if (e) {
            e->deliveries = (unsigned)x->element[3]->integer;
        }
    }
    bool ok = r && r->type == REDIS_REPLY_ARRAY;
    while (!bd_list_empty(&cl->ents)) {
        ent_t *e = BD_CONTAINER_OF(bd_list_first(&cl->ents), ent_t, link);
        bd_list_unlink(&e->link);
        if (!ok || ing->freeing) {
            ent_release(ing, e); /* still pending: claimed again later */
            continue;
        }
        p->c.read += cl->reread; /* a claimed entry counts as reclaimed, below, unless dead */
        if (e->deliveries > (unsigned)p->cfg.max_deliveries) {
            /* Its stream's result writes (e->s is s) failing now, or since the entry was first
             * read, may be why. */
            uint64_t span = (uint64_t)p->cfg.claim_idle_ms * 1000u * e->deliveries;
            char why[192], msg[384];
            uint64_t now = bd_now_us();
            if (s->write_failing || (s->write_err_us && now - s->write_err_us <= span)) {
                snprintf(why, sizeof why, "writing its result failed (the last time: %s)",
                         s->write_err);
            } else if (s->model_err_us && now - s->model_err_us <= span) {
                snprintf(why, sizeof why, "the model failed it (the last time: %s)", s->model_err);
            } else {
                snprintf(why, sizeof why, "the model failed it each time or its consumers stopped");
            }
            snprintf(msg, sizeof msg,
                     "the entry was delivered %u times (max_deliveries %d) and no result was "
                     "written: %s",
                     e->deliveries, p->cfg.max_deliveries, why);
            fail_entry(ing, e, K_DEAD, msg);
            continue;
        }
        p->c.reclaimed += !cl->reread;
        if (e->kind == K_ERROR) {
            bad_entry(ing, e);
        } else {
            bd_list_push_back(&p->backlog, &e->link);
            p->n_backlog++;
        }
    }
    free(cl);
    kick(ing);
}

/* The delivery counts of the entries cl took (neither XAUTOCLAIM nor XREADGROUP says), from
 * one XPENDING over their range (`delivered` entries at most); on_claim_counts then runs them
 * or dead-letters those past max_deliveries. False when it could not be sent: they were
 * released (still pending, claimed again later). */
static bool fetch_counts(claim_t *cl, size_t delivered)
{
    stream_t *s = cl->s;
    pipe_t *p = s->p;
    bd_ingest_t *ing = p->ing;
    ent_t *first = BD_CONTAINER_OF(cl->ents.next, ent_t, link);
    ent_t *last = BD_CONTAINER_OF(cl->ents.prev, ent_t, link);
    size_t n = 0;
    for (bd_list_t *l = cl->ents.next; l != &cl->ents; l = l->next) {
        n++;
    }
    char count[24];
    snprintf(count, sizeof count, "%zu", delivered > n ? delivered : n);
    if (args_reserve(ing, 7)) {
        ing->an = 0;
        arg_s(ing, "XPENDING");
        arg(ing, s->key, s->key_len);
        arg_s(ing, p->cfg.group);
        arg(ing, first->idstr, first->idlen);
        arg(ing, last->idstr, last->idlen);
        arg_s(ing, count);
        arg_s(ing, ing->consumer);
        if (send_args(ing, &ing->ctl, on_claim_counts, cl) == 0) {
            cl->counting = true;
            ing->rereads += cl->reread;
            return true;
        }
    }
    bool reread = cl->reread;
    on_claim_counts(NULL, NULL, cl); /* frees cl */
    if (!reread) {
        s->claiming = false;
    }
    return false;
}

static void on_claim(redisAsyncContext *ac, void *r_, void *priv)
{
    stream_t *s = priv;
    pipe_t *p = s->p;
    bd_ingest_t *ing = p->ing;
    redisReply *r = r_;
    (void)ac;
    s->claiming = false;
    p->reserved -= s->claim_reserved;
    s->claim_reserved = 0;
    kick(ing); /* its room is free again: the next stream due can claim */
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
        if (r && r->type == REDIS_REPLY_ERROR) {
            if (strncmp(r->str, "NOGROUP", 7) == 0 || strncmp(r->str, "WRONGTYPE", 9) == 0) {
                s->group_ready = false;
                s->gone = true; /* freed by the next scan, unless it is back (as a stream) */
            }
            if (log_ok(ing, LOG_READ)) {
                char why[BD_LOG_TEXT_MAX];
                BD_WARN("ingest", "claim failed stream=%s reason=%s", s->log_key,
                        bd_log_quoted(why, sizeof why, r->str));
            }
        }
        return;
    }
    const redisReply *next = r->element[0];
    if (next->len < ID_MAX) {
        memcpy(s->claim_cursor, next->str, (size_t)next->len);
        s->claim_cursor[next->len] = '\0';
    }
    s->claim_more = strcmp(s->claim_cursor, "0-0") != 0;
    bd_model_t *m = pipe_model(p);
    const bd_model_config_t *cfg = m ? bd_model_config(m) : NULL;
    const redisReply *ents = r->element[1];
    claim_t *cl = cfg && ents->elements ? calloc(1, sizeof *cl) : NULL;
    if (!cl) {
        return;
    }
    cl->s = s;
    bd_list_init(&cl->ents);
    for (size_t i = 0; i < ents->elements; i++) {
        take_entry(p, s, ents->element[i], cfg, cl);
    }
    if (bd_list_empty(&cl->ents)) {
        free(cl);
        return;
    }
    if (fetch_counts(cl, ents->elements)) {
        s->claiming = true;
    }
}

/* Send an XAUTOCLAIM for s, reserving the entries it may bring; false when it cannot go now
 * (one in flight, no group, no room). */
static bool claim_stream(stream_t *s)
{
    pipe_t *p = s->p;
    bd_ingest_t *ing = p->ing;
    size_t used = p->held + p->reserved;
    if (s->claiming || !s->group_ready || used >= p->cap || !args_reserve(ing, 8)) {
        return false;
    }
    size_t n = p->cap - used < CLAIM_COUNT ? p->cap - used : CLAIM_COUNT;
    char count[24], idle[24];
    snprintf(count, sizeof count, "%zu", n);
    snprintf(idle, sizeof idle, "%" PRId64, p->cfg.claim_idle_ms);
    ing->an = 0;
    arg_s(ing, "XAUTOCLAIM");
    arg(ing, s->key, s->key_len);
    arg_s(ing, p->cfg.group);
    arg_s(ing, ing->consumer);
    arg_s(ing, idle);
    arg_s(ing, s->claim_cursor);
    arg_s(ing, "COUNT");
    arg_s(ing, count);
    if (send_args(ing, &ing->ctl, on_claim, s) != 0) {
        return false;
    }
    s->claiming = true;
    s->claim_reserved = n;
    p->reserved += n;
    return true;
}

/* ---- running entries ------------------------------------------------------------------------ */

static void on_call_done(bd_call_t *call)
{
    ent_t *e = *(ent_t **)bd_call_user(call);
    bd_ingest_t *ing = e->s->p->ing;
    const char *msg = NULL;
    int rc = bd_call_status(call, &msg);
    if (rc == 0) {
        e->kind = K_OK;
        to_results(ing, e);
    } else if (rc == BD_EINVAL || rc == BD_ETOOBIG) {
        fail_entry(ing, e, K_ERROR, msg); /* the call stays: it names the model version */
    } else {
        /* The model failed (not the entry): leave it pending; it comes back once idle for
         * claim_idle_ms, and is dead-lettered past max_deliveries. */
        e->s->p->c.errors++;
        snprintf(e->s->model_err, sizeof e->s->model_err, "%s", msg ? msg : "failed");
        e->s->model_err_us = bd_now_us();
        if (log_ok(ing, LOG_MODEL)) {
            char why[BD_LOG_TEXT_MAX];
            BD_WARN("ingest",
                    "model failed an entry model=%s stream=%s id=%s reason=%s; "
                    "left pending for a retry",
                    e->s->p->model, e->s->log_key, e->idstr,
                    bd_log_quoted(why, sizeof why, e->s->model_err));
        }
        ent_release(ing, e);
    }
    kick(ing);
}

/* Hand queued entries to the model while its queue has room. */
static void pump(pipe_t *p, bd_model_t *m)
{
    bd_ingest_t *ing = p->ing;
    bd_sched_t *sched = bd_model_sched(m);
    while (!bd_list_empty(&p->backlog)) {
        if (bd_sched_queue_depth(sched) >= p->hw) {
            return;
        }
        ent_t *e = BD_CONTAINER_OF(bd_list_first(&p->backlog), ent_t, link);
        bd_infer_raw_args_t a = {.protocol = BD_PROTO_REDIS,
                                 .model = p->model,
                                 .model_len = p->model_len,
                                 .inputs = e->in,
                                 .n_inputs = e->n_in,
                                 .max_bytes = ing->max_entry_bytes,
                                 .user_size = sizeof(ent_t *),
                                 .body = e->data};
        bd_call_t *call = NULL;
        bd_err_t err = {0};
        int rc = bd_infer_start_raw(ing->inf, &a, on_call_done, &call, &err);
        if (rc == BD_EFULL) {
            return; /* HTTP took the room meanwhile: try again later */
        }
        bd_list_unlink(&e->link);
        p->n_backlog--;
        if (rc == 0) {
            if (ing->stopping) {
                ing->stop_us = bd_now_us(); /* the drain moves on: its deadlines wait */
            }
            *(ent_t **)bd_call_user(call) = e;
            e->call = call;
            e->data = NULL; /* the call's body now */
            drop_inputs(e);
        } else if (rc == BD_EINVAL || rc == BD_ETOOBIG || rc == BD_ENOTFOUND) {
            fail_entry(ing, e, K_ERROR, err.msg);
        } else {
            p->c.errors++;
            if (log_ok(ing, LOG_MODEL)) {
                char why[BD_LOG_TEXT_MAX];
                BD_WARN("ingest",
                        "entry not run model=%s stream=%s id=%s reason=%s; left "
                        "pending for a retry",
                        p->model, e->s->log_key, e->idstr, bd_log_quoted(why, sizeof why, err.msg));
            }
            ent_release(ing, e);
        }
    }
}

/* ---- writing results ------------------------------------------------------------------------ */

static size_t ent_fields(const ent_t *e, const bd_tensor_t **outs, size_t *n_outs)
{
    *n_outs = e->kind == K_OK && e->call ? bd_call_outputs(e->call, outs) : 0;
    /* source_stream, source_id, model_name, model_version; then status and the outputs,
     * status and error, or deliveries and reason; then the metadata. */
    return 4 + e->n_meta + (e->kind == K_OK ? 1 + 3 * *n_outs : 2);
}

/* Append one entry's script arguments. Room in av and scratch reserved by the caller. */
static void put_entry(bd_ingest_t *ing, ent_t *e)
{
    pipe_t *p = e->s->p;
    const bd_tensor_t *outs = NULL;
    size_t n_outs = 0;
    size_t nf = ent_fields(e, &outs, &n_outs);
    size_t len = 0;
    arg(ing, e->s->key, e->s->key_len);
    arg_s(ing, p->cfg.group);
    arg(ing, e->idstr, e->idlen);
    if (e->kind == K_DEAD) {
        arg(ing, e->s->dead_key, e->s->dead_len);
    } else {
        arg(ing, e->s->results_key, e->s->results_len);
    }
    const char *v = scratch_printf(ing, &len, "%" PRId64, p->cfg.results_maxlen);
    arg(ing, v, len);
    v = scratch_printf(ing, &len, "%zu", nf * 2);
    arg(ing, v, len);
    arg_s(ing, "source_stream");
    arg(ing, e->s->key, e->s->key_len);
    arg_s(ing, "source_id");
    arg(ing, e->idstr, e->idlen);
    arg_s(ing, "model_name");
    arg_s(ing, e->call ? bd_call_model_name(e->call) : p->model);
    arg_s(ing, "model_version");
    if (e->call) {
        arg_s(ing, bd_call_model_version(e->call));
    } else { /* a bad entry, or dead: the version that judged it is the one serving now */
        bd_model_t *m = pipe_model(p);
        arg_s(ing, m ? bd_model_version(m) : "");
    }
    if (e->kind == K_DEAD) {
        arg_s(ing, "deliveries");
        v = scratch_printf(ing, &len, "%u", e->deliveries);
        arg(ing, v, len);
        arg_s(ing, "reason");
        arg_s(ing, e->msg);
    } else {
        arg_s(ing, "status");
        arg_s(ing, e->kind == K_OK ? "ok" : "error");
    }
    if (e->kind == K_ERROR) {
        arg_s(ing, "error");
        arg_s(ing, e->msg);
    }
    for (size_t i = 0; i < n_outs; i++) {
        const bd_tensor_t *t = &outs[i];
        arg_s(ing, t->name);
        arg(ing, t->byte_size ? t->data : "", t->byte_size);
        v = scratch_printf(ing, &len, "%s.shape", t->name);
        arg(ing, v, len);
        char dims[BD_MAX_DIMS * 21 + 1];
        size_t dl = 0;
        dims[0] = '\0';
        for (int d = 0; d < t->shape.ndim; d++) {
            dl += (size_t)snprintf(dims + dl, sizeof dims - dl, d ? ",%" PRId64 : "%" PRId64,
                                   t->shape.dims[d]);
        }
        v = scratch_printf(ing, &len, "%s", dims);
        arg(ing, v, len);
        v = scratch_printf(ing, &len, "%s.datatype", t->name);
        arg(ing, v, len);
        arg_s(ing, bd_dtype_name(t->dtype));
    }
    for (size_t i = 0; i < e->n_meta; i++) {
        arg(ing, e->meta[i].k, e->meta[i].kl);
        arg(ing, e->meta[i].v, e->meta[i].vl);
    }
}

/* How writing e's result went, for its stream's dead letters (a dead letter's own write goes
 * to another key, and tells nothing of the results key). */
static void note_write(const ent_t *e, const char *failed)
{
    stream_t *s = e->s;
    if (e->kind == K_DEAD) {
        return;
    }
    s->write_failing = failed != NULL;
    if (failed) {
        snprintf(s->write_err, sizeof s->write_err, "%s", failed);
        s->write_err_us = bd_now_us();
    }
}

static void on_written(redisAsyncContext *ac, void *r_, void *priv)
{
    wbatch_t *wb = priv;
    bd_ingest_t *ing = wb->ing;
    redisReply *r = r_;
    (void)ac;
    ing->writes_inflight--;
    size_t i = 0;
    bool requeue = !r || r->type != REDIS_REPLY_ARRAY;
    if (!requeue && ing->writes_since_us) {
        ing->writes_since_us = bd_now_us(); /* the drain's writes move on: its deadline waits */
    }
    if (r && r->type == REDIS_REPLY_ERROR) {
        if (log_ok(ing, LOG_WRITE)) {
            char why[BD_LOG_TEXT_MAX];
            BD_WARN("ingest", "writing results failed reason=%s; retrying",
                    bd_log_quoted(why, sizeof why, r->str));
        }
    }
    if (requeue && !ing->freeing) {
        ing->write_retry_at_us = bd_now_us() + (r ? WRITE_RETRY_US : 0);
    }
    bd_list_t *front = ing->results.next; /* requeued ones go before it, in their order */
    while (!bd_list_empty(&wb->ents)) {
        ent_t *e = BD_CONTAINER_OF(bd_list_first(&wb->ents), ent_t, link);
        pipe_t *p = e->s->p;
        if (requeue) {
            if (r && r->type == REDIS_REPLY_ERROR) {
                note_write(e, r->str);
            }
            bd_list_unlink(&e->link);
            if (++e->write_tries > WRITE_MAX_TRIES) {
                ent_release(ing, e); /* still pending: it comes back */
                continue;
            }
            /* Back to the front: sent again (skipped if it went through after all). */
            bd_list_insert_before(front, &e->link);
            ing->n_results++;
            continue;
        }
        const redisReply *x = i < r->elements ? r->element[i] : NULL;
        i++;
        note_write(e, x && x->type == REDIS_REPLY_INTEGER  ? NULL
                      : x && x->type == REDIS_REPLY_STRING ? x->str
                                                           : "no reply");
        if (x && x->type == REDIS_REPLY_INTEGER && (x->integer == 1 || x->integer == 2)) {
            p->c.written++;
            p->c.acked += x->integer == 1; /* 2: trimmed from its stream, nothing to ack */
            p->c.dead += e->kind == K_DEAD;
        } else if (x && x->type == REDIS_REPLY_INTEGER) {
            p->c.duplicates++;
        } else {
            p->c.errors++;
            const char *why = x && x->type == REDIS_REPLY_STRING ? x->str : "no reply";
            if (log_ok(ing, LOG_WRITE)) {
                char shown[BD_LOG_TEXT_MAX];
                BD_WARN("ingest", "result not written stream=%s id=%s reason=%s", e->s->log_key,
                        e->idstr, bd_log_quoted(shown, sizeof shown, why));
            }
        }
        ent_release(ing, e);
    }
    free(wb);
    kick(ing);
}

static void flush_results(bd_ingest_t *ing)
{
    while (!bd_list_empty(&ing->results) && ing->ctl.ready &&
           bd_now_us() >= ing->write_retry_at_us) {
        wbatch_t *wb = calloc(1, sizeof *wb);
        if (!wb) {
            return;
        }
        wb->ing = ing;
        bd_list_init(&wb->ents);
        /* Size the batch first, so the arguments and scratch never move while built. */
        size_t n = 0, args = 3, bytes = 0, scratch = 0;
        for (bd_list_t *l = ing->results.next; l != &ing->results && n < WRITE_MAX_ENTS;
             l = l->next) {
            ent_t *e = BD_CONTAINER_OF(l, ent_t, link);
            const bd_tensor_t *outs = NULL;
            size_t n_outs = 0;
            size_t nf = ent_fields(e, &outs, &n_outs);
            size_t eb = 0;
            for (size_t k = 0; k < n_outs; k++) {
                eb += outs[k].byte_size + 2 * strlen(outs[k].name) + BD_MAX_DIMS * 21 + 32;
            }
            for (size_t k = 0; k < e->n_meta; k++) {
                eb += e->meta[k].kl + e->meta[k].vl;
            }
            if (n > 0 && bytes + eb > WRITE_MAX_BYTES) {
                break;
            }
            n++;
            args += 6 + 2 * nf;
            bytes += eb;
            scratch += 96 + n_outs * (2 * 64 + BD_MAX_DIMS * 21);
            for (size_t k = 0; k < n_outs; k++) {
                scratch += 2 * strlen(outs[k].name);
            }
        }
        bd_buf_reset(&ing->scratch);
        if (!args_reserve(ing, args) || bd_buf_reserve(&ing->scratch, scratch) != 0) {
            free(wb);
            return;
        }
        ing->an = 0;
        arg_s(ing, "EVAL");
        arg(ing, write_script, sizeof write_script - 1);
        arg_s(ing, "0");
        for (size_t k = 0; k < n; k++) {
            ent_t *e = BD_CONTAINER_OF(bd_list_first(&ing->results), ent_t, link);
            bd_list_unlink(&e->link);
            ing->n_results--;
            bd_list_push_back(&wb->ents, &e->link);
            put_entry(ing, e);
        }
        if (send_args(ing, &ing->ctl, on_written, wb) != 0) {
            /* Not sent: back to the front, in order. */
            while (!bd_list_empty(&wb->ents)) {
                bd_list_t *l = wb->ents.prev;
                bd_list_unlink(l);
                bd_list_insert_before(ing->results.next, l);
                ing->n_results++;
            }
            free(wb);
            return;
        }
        ing->writes_inflight++;
    }
}

/* ---- the engine -------------------------------------------------------------------------- */

static void add_pipe(bd_ingest_t *ing, bd_model_t *m, const bd_redis_config_t *cfg)
{
    pipe_t **arr = realloc(ing->pipes, (ing->n_pipes + 1) * sizeof *arr);
    if (!arr) {
        return;
    }
    ing->pipes = arr;
    pipe_t *p = calloc(1, sizeof *p);
    if (!p || !(p->model = strdup(bd_model_name(m)))) {
        free(p);
        return;
    }
    p->ing = ing;
    p->model_len = strlen(p->model);
    p->cfg = *cfg;
    p->literal = strpbrk(cfg->streams, "*?[\\") == NULL;
    bd_list_init(&p->backlog);
    p->hw = 768;
    p->cap = 256;
    ing->pipes[ing->n_pipes++] = p;
    BD_INFO("ingest",
            "model=%s streams=%s group=%s consumer=%s results=%s dead_letter=%s read_count=%d "
            "block_ms=%d claim_idle_ms=%" PRId64 " max_deliveries=%d",
            p->model, cfg->streams, cfg->group, ing->consumer, cfg->results, cfg->dead_letter,
            cfg->read_count, cfg->block_ms, cfg->claim_idle_ms, cfg->max_deliveries);
}

/* Models with a redis section that have no pipe yet (loaded since the last look). */
static void find_pipes(bd_ingest_t *ing)
{
    for (size_t i = 0; i < bd_repo_count(ing->repo); i++) {
        bd_model_t *m = bd_repo_at(ing->repo, i);
        const bd_config_t *fc = m ? bd_model_full_config(m) : NULL;
        if (!fc || !fc->redis.enabled) {
            continue;
        }
        bool known = false;
        for (size_t k = 0; k < ing->n_pipes && !known; k++) {
            known = strcmp(ing->pipes[k]->model, bd_model_name(m)) == 0;
        }
        if (!known) {
            add_pipe(ing, m, &fc->redis);
        }
    }
}

static void free_stream(stream_t *s)
{
    free(s->key);
    free(s->log_key);
    free(s->results_key);
    free(s->dead_key);
    free(s);
}

/* Deleted streams that nothing refers to any more (no entry held, no command in flight about
 * them) leave their pipe and shard, so cameras that come and go do not add up; a shard's
 * place is taken by the next new stream. */
static void prune(pipe_t *p)
{
    size_t kept = 0;
    for (size_t i = 0; i < p->n_streams; i++) {
        stream_t *s = p->streams[i];
        if (!s->gone || s->group_ready || s->held || s->gauges || s->claiming || s->creating) {
            p->streams[kept++] = s;
            continue;
        }
        shard_t *sh = s->shard;
        for (size_t k = 0; sh && k < sh->n; k++) {
            if (sh->streams[k] == s) {
                memmove(sh->streams + k, sh->streams + k + 1, (sh->n - k - 1) * sizeof s);
                sh->n--;
                p->ing->n_read--;
                sh->cursor = sh->n ? sh->cursor % sh->n : 0;
                break;
            }
        }
        BD_DEBUG("ingest", "stream gone model=%s stream=%s", p->model, s->log_key);
        free_stream(s);
    }
    p->n_streams = kept;
}

static void scan(bd_ingest_t *ing)
{
    find_pipes(ing);
    for (size_t i = 0; i < ing->n_pipes; i++) {
        pipe_t *p = ing->pipes[i];
        prune(p);
        if (p->literal) {
            add_stream(p, p->cfg.streams, strlen(p->cfg.streams));
        } else if (!p->scanning) {
            send_scan(p, "0");
        }
        refresh_gauges(p);
    }
}

/* Entries we hold stay ours: every held entry that has waited claim_idle_ms / 2 since it was
 * delivered (in the backlog, the model's queue, the result list) is claimed again by us with
 * XCLAIM ... JUSTID, which resets its idle time without counting a delivery. Otherwise a slow
 * model's queue would go idle past claim_idle_ms: other consumers would take its entries and
 * run them a second time, and our own XAUTOCLAIM would raise their delivery counts until a
 * restart, or their first failure, dead-lettered frames the model never failed. */
static void refresh_held(bd_ingest_t *ing, uint64_t now)
{
    if (ing->set.n == 0) {
        return; /* nothing held: the slots need no walk */
    }
    for (size_t i = 0; i < ing->set.cap && ing->ctl.ready; i++) {
        ent_t *e = ing->set.slots[i];
        if (!e) {
            continue;
        }
        const pipe_t *p = e->s->p;
        uint64_t half = (uint64_t)p->cfg.claim_idle_ms * 500;
        if (now - e->fresh_us < half || !args_reserve(ing, 7)) {
            continue;
        }
        ing->an = 0;
        arg_s(ing, "XCLAIM");
        arg(ing, e->s->key, e->s->key_len);
        arg_s(ing, p->cfg.group);
        arg_s(ing, ing->consumer);
        arg_s(ing, "0");
        arg(ing, e->idstr, e->idlen);
        arg_s(ing, "JUSTID");
        if (send_args(ing, &ing->ctl, NULL, NULL) == 0) {
            e->fresh_us = now;
        }
    }
}

static void progress(bd_ingest_t *ing)
{
    if (ing->freeing) {
        return;
    }
    uint64_t now = bd_now_us();
    if (ing->ctl.ready && !ing->stopping && now >= ing->next_scan_us) {
        ing->next_scan_us = now + SCAN_EVERY_US;
        scan(ing);
    }
    for (size_t i = 0; i < ing->n_pipes; i++) {
        pipe_t *p = ing->pipes[i];
        bd_model_t *m = pipe_model(p);
        if (!m) {
            continue;
        }
        pump(p, m);
        if (ing->stopping) {
            continue;
        }
        for (size_t k = 0; k < p->n_shards; k++) {
            maybe_read(p->shards[(p->next_shard + k) % p->n_shards], m);
        }
        p->next_shard = p->n_shards > 0 ? (p->next_shard + 1) % p->n_shards : 0;
        bool due = now >= p->next_claim_us;
        if (due) {
            uint64_t half = (uint64_t)p->cfg.claim_idle_ms * 500;
            p->next_claim_us = now + (half ? half : 1000);
        }
        /* A stream due for a claim stays due until its claim could be sent (room permitting),
         * so that every stream is claimed in turn, however many there are. */
        size_t first = p->next_claim;
        for (size_t k = 0; k < p->n_streams && ing->ctl.ready; k++) {
            size_t j = (first + k) % p->n_streams;
            stream_t *s = p->streams[j];
            s->claim_more = s->claim_more || due;
            if (s->claim_more && claim_stream(s)) {
                s->claim_more = false;
                p->next_claim = j + 1;
            }
        }
    }
    flush_results(ing);
}

static void on_kick(h2o_timeout_entry_t *entry)
{
    bd_ingest_t *ing = H2O_STRUCT_FROM_MEMBER(bd_ingest_t, kick, entry);
    progress(ing);
}

static void kick(bd_ingest_t *ing)
{
    if (!ing->freeing && !h2o_timeout_is_linked(&ing->kick)) {
        h2o_timeout_link(ing->loop, &ing->kick_to, &ing->kick);
    }
}

static void on_tick(h2o_timeout_entry_t *entry)
{
    bd_ingest_t *ing = H2O_STRUCT_FROM_MEMBER(bd_ingest_t, tick, entry);
    uint64_t now = bd_now_us();
    rconn_poll(&ing->ctl, now);
    for (size_t i = 0; i < ing->n_pipes; i++) {
        for (size_t k = 0; k < ing->pipes[i]->n_shards; k++) {
            rconn_poll(&ing->pipes[i]->shards[k]->conn, now);
        }
    }
    refresh_held(ing, now);
    progress(ing);
    h2o_timeout_link(ing->loop, &ing->tick_to, &ing->tick);
}

/* ---- metrics ---------------------------------------------------------------------------- */

static void put_label(bd_buf_t *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"') {
            bd_buf_putc(out, '\\');
            bd_buf_putc(out, *s);
        } else if (*s == '\n') {
            bd_buf_puts(out, "\\n");
        } else {
            bd_buf_putc(out, *s);
        }
    }
}

static void render(void *ctx, bd_buf_t *out)
{
    bd_ingest_t *ing = ctx;
    static const struct {
        const char *name, *type, *help;
    } fam[] = {
        {"batchd_redis_entries_read_total", "counter", "Entries read with XREADGROUP."},
        {"batchd_redis_results_written_total", "counter",
         "Result, error and dead-letter entries written."},
        {"batchd_redis_acked_total", "counter", "Input entries acknowledged (XACK)."},
        {"batchd_redis_errors_total", "counter",
         "Bad entries answered with an error, entries the model failed, failed writes."},
        {"batchd_redis_dead_lettered_total", "counter",
         "Entries written to the dead-letter stream after max_deliveries."},
        {"batchd_redis_reclaimed_total", "counter", "Idle entries taken over with XAUTOCLAIM."},
        {"batchd_redis_duplicates_skipped_total", "counter",
         "Results not written because another consumer had answered the entry."},
        {"batchd_redis_pending", "gauge", "Entries pending in the group (XPENDING)."},
        {"batchd_redis_consumer_lag", "gauge",
         "Entries not yet delivered to the group, as Redis reports it (XINFO GROUPS)."},
        {"batchd_redis_streams", "gauge", "Input streams the pattern matched."},
    };
    for (size_t f = 0; f < sizeof fam / sizeof fam[0]; f++) {
        bd_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", fam[f].name, fam[f].help, fam[f].name,
                      fam[f].type);
        for (size_t i = 0; i < ing->n_pipes; i++) {
            pipe_t *p = ing->pipes[i];
            const counters_t *c = &p->c;
            int64_t v;
            switch (f) {
            case 0:
                v = (int64_t)c->read;
                break;
            case 1:
                v = (int64_t)c->written;
                break;
            case 2:
                v = (int64_t)c->acked;
                break;
            case 3:
                v = (int64_t)c->errors;
                break;
            case 4:
                v = (int64_t)c->dead;
                break;
            case 5:
                v = (int64_t)c->reclaimed;
                break;
            case 6:
                v = (int64_t)c->duplicates;
                break;
            case 7:
                v = p->pending;
                break;
            case 8:
                v = p->lag;
                break;
            default:
                v = (int64_t)p->n_streams;
                break;
            }
            if ((f == 7 && !p->pending_known) || (f == 8 && !p->lag_known)) {
                continue;
            }
            bd_buf_printf(out, "%s{model=\"", fam[f].name);
            put_label(out, p->model);
            bd_buf_puts(out, "\",pattern=\"");
            put_label(out, p->cfg.streams);
            bd_buf_printf(out, "\"} %" PRId64 "\n", v);
        }
    }
    bd_buf_printf(out,
                  "# HELP batchd_redis_connected Whether the Redis control connection is up.\n"
                  "# TYPE batchd_redis_connected gauge\nbatchd_redis_connected %d\n",
                  ing->ctl.ready ? 1 : 0);
}

/* ---- lifecycle ------------------------------------------------------------------------- */

/* USER or PASSWORD of a URL, s[0..n) with %XX escapes decoded, into out (cap bytes). False
 * when too long, badly escaped or holding a NUL. */
static bool url_part(const char *s, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (const char *p = s; p < s + n;) {
        int c = bd_pct_byte(&p, s + n);
        if (c <= 0 || k + 1 >= cap) { /* a bad escape, %00 */
            return false;
        }
        out[k++] = (char)c;
    }
    out[k] = '\0';
    return true;
}

#define BAD_URL                                                                                    \
    "--redis must look like redis://HOST[:PORT][/DB] or redis://[USER]:PASSWORD@HOST[:PORT][/DB] " \
    "(port 6379 when left out), or unix://[[USER]:PASSWORD@]/PATH[?db=DB] for a Redis on this "    \
    "machine, got '%s'"

/* A URL's database number, the whole of s: digits only (no sign or space), at most 100000. */
static bool parse_db(const char *s, int *db)
{
    char *end = NULL;
    long v = *s >= '0' && *s <= '9' ? strtol(s, &end, 10) : -1;
    if (!end || *end || v > 100000) {
        return false;
    }
    *db = (int)v;
    return true;
}

/* unix://'s /PATH[?db=DB], at p. The path's characters are a file name's usual ones, so that
 * it shows in a log line as it is. */
static int parse_unix(const char *p, bd_redis_url_t *out, const char *shown, bd_err_t *err)
{
    size_t n = strcspn(p, "?");
    if (p[0] != '/' || n < 2 || p[n - 1] == '/') {
        return bd_err_set(err, BD_EINVAL, BAD_URL, shown);
    }
    if (strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789./-_+~,=") < n) {
        return bd_err_set(err, BD_EINVAL,
                          "--redis: a unix socket's path may hold letters, digits and ./-_+~,= "
                          "only, got '%s'",
                          shown);
    }
    if (n >= sizeof out->path) {
        return bd_err_set(err, BD_EINVAL,
                          "--redis: a unix socket's path may be at most %zu bytes, got %zu in '%s'",
                          sizeof out->path - 1, n, shown);
    }
    memcpy(out->path, p, n);
    out->path[n] = '\0';
    if (p[n] == '?' && (strncmp(p + n, "?db=", 4) != 0 || !parse_db(p + n + 4, &out->db))) {
        return bd_err_set(err, BD_EINVAL, BAD_URL, shown);
    }
    return 0;
}

int bd_ingest_parse_url(const char *url, bd_redis_url_t *out, bd_err_t *err)
{
    static const char scheme[] = "redis://", unix_scheme[] = "unix://";
    memset(out, 0, sizeof *out);
    /* USER:PASSWORD@ ends at the last '@' (neither a host nor a DB holds one; a password may,
     * and '/' too, escaped or not). Every message quotes the URL without it. */
    const char *at = strrchr(url, '@');
    const char *sep = strstr(url, "://");
    char shown[300];
    const char *port = sep ? strchr(sep + 3, ':') : NULL;
    size_t digits = port ? strspn(port + 1, "0123456789") : 0;
    if (at) {
        snprintf(shown, sizeof shown, "%.*s...%s", sep && sep < at ? (int)(sep + 3 - url) : 0, url,
                 at);
    } else if (port && port[1 + digits] != '/' && port[1 + digits] != '\0') {
        /* Not a port: a password whose '@HOST' was left out ('redis://:PASSWORD'). */
        snprintf(shown, sizeof shown, "%.*s...", (int)(port + 1 - url), url);
    } else {
        snprintf(shown, sizeof shown, "%s", url);
    }
    bool unix_sock = strncmp(url, unix_scheme, sizeof unix_scheme - 1) == 0;
    if (!unix_sock && strncmp(url, scheme, sizeof scheme - 1) != 0) {
        return bd_err_set(err, BD_EINVAL, BAD_URL, shown);
    }
    const char *h = url + (unix_sock ? sizeof unix_scheme : sizeof scheme) - 1;
    if (at) {
        const char *colon = memchr(h, ':', (size_t)(at - h));
        if (!colon || !url_part(h, (size_t)(colon - h), out->user, sizeof out->user) ||
            !url_part(colon + 1, (size_t)(at - colon - 1), out->password, sizeof out->password) ||
            !out->password[0]) {
            return bd_err_set(err, BD_EINVAL,
                              "--redis: the part before '@' must be [USER]:PASSWORD (a password "
                              "of 1 to 255 bytes, %%XX escapes allowed), got '%s'",
                              shown);
        }
        h = at + 1;
    }
    if (unix_sock) {
        return parse_unix(h, out, shown, err);
    }
    const char *he, *rest;
    if (*h == '[') {
        he = strchr(h, ']');
        if (!he) {
            return bd_err_set(err, BD_EINVAL, BAD_URL, shown);
        }
        h++;
        rest = he + 1;
    } else {
        he = h + strcspn(h, ":/");
        rest = he;
    }
    /* A host name (letters, digits, '.', '-', '_'), an IPv4 address, or in brackets an IPv6
     * one (with a %zone): nothing that could break a log line. */
    if (he == h || (size_t)(he - h) >= sizeof out->host ||
        strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:%") <
            (size_t)(he - h)) {
        return bd_err_set(err, BD_EINVAL, BAD_URL, shown);
    }
    memcpy(out->host, h, (size_t)(he - h));
    out->host[he - h] = '\0';
    char *zone = strstr(out->host, "%25"); /* RFC 6874 writes an IPv6 zone's '%' as %25 */
    if (zone && *he == ']') {
        memmove(zone + 1, zone + 3, strlen(zone + 3) + 1);
    }
    out->port = 6379;
    out->db = 0;
    if (*rest == ':') {
        char *end = NULL;
        long v = strtol(rest + 1, &end, 10);
        if (end == rest + 1 || v < 1 || v > 65535) {
            return bd_err_set(err, BD_EINVAL, BAD_URL, shown);
        }
        out->port = (int)v;
        rest = end;
    }
    if (*rest == '/' && rest[1]) {
        if (!parse_db(rest + 1, &out->db)) {
            return bd_err_set(err, BD_EINVAL, BAD_URL, shown);
        }
    } else if (*rest && strcmp(rest, "/") != 0) {
        return bd_err_set(err, BD_EINVAL, BAD_URL, shown);
    }
    return 0;
}

const char *bd_ingest_url_where(const bd_redis_url_t *u, const char *addr, char *buf, size_t n)
{
    if (u->path[0]) {
        snprintf(buf, n, "path=%s", u->path);
    } else {
        snprintf(buf, n, "host=%s%s%s port=%d", u->host, addr && addr[0] ? " address=" : "",
                 addr ? addr : "", u->port);
    }
    return buf;
}

bd_ingest_t *bd_ingest_new(struct st_h2o_evloop_t *loop, bd_infer_t *inf, bd_repo_t *repo,
                           bd_metrics_t *metrics, const bd_ingest_opts_t *opts, bd_err_t *err)
{
    bd_ingest_t *ing = calloc(1, sizeof *ing);
    if (!ing) {
        bd_err_set(err, BD_ENOMEM, "out of memory");
        return NULL;
    }
    ing->loop = loop;
    ing->inf = inf;
    ing->repo = repo;
    ing->metrics = metrics;
    ing->url = opts->url;
    snprintf(ing->consumer, sizeof ing->consumer, "%s", opts->consumer);
    ing->max_entry_bytes = opts->max_entry_bytes ? opts->max_entry_bytes : SIZE_MAX / 2;
    unsigned char addr[sizeof(struct in6_addr)];
    resolver_t *res = NULL; /* only for a name */
    if (!ing->url.path[0] && inet_pton(AF_INET, ing->url.host, addr) != 1 &&
        inet_pton(AF_INET6, ing->url.host, addr) != 1 &&
        !(res = resolver_new(ing->url.host, err))) {
        free(ing);
        return NULL;
    }
    raddrs_init(&ing->addrs, ing->url.path[0] ? "unix" : ing->url.host, res);
    bd_list_init(&ing->results);
    bd_buf_init(&ing->scratch);
    rconn_init(&ing->ctl, loop, &ing->url, &ing->addrs, "control", REPLY_GRACE_MS, on_ctl_state,
               ing);
    h2o_timeout_init(loop, &ing->tick_to, TICK_MS);
    h2o_timeout_init(loop, &ing->kick_to, 0);
    ing->tick.cb = on_tick;
    ing->kick.cb = on_kick;
    find_pipes(ing);
    if (ing->n_pipes == 0) {
        BD_WARN("ingest", "no model has a \"redis\" section in its config.json; Redis ingest "
                          "waits for one to load");
    }
    bd_metrics_set_extra(metrics, render, ing);
    rconn_poll(&ing->ctl, bd_now_us());
    h2o_timeout_link(loop, &ing->tick_to, &ing->tick);
    return ing;
}

void bd_ingest_stop(bd_ingest_t *ing)
{
    if (!ing->stopping) {
        ing->stopping = true;
        ing->stop_us = bd_now_us();
        kick(ing);
    }
}

bool bd_ingest_reading(const bd_ingest_t *ing)
{
    if (bd_now_us() > ing->stop_us + READ_DRAIN_US) {
        return false;
    }
    if (ing->rereads > 0) {
        return true;
    }
    for (size_t i = 0; i < ing->n_pipes; i++) {
        const pipe_t *p = ing->pipes[i];
        if (!bd_list_empty(&p->backlog)) {
            return true;
        }
        for (size_t k = 0; k < p->n_shards; k++) {
            if (p->shards[k]->reading) {
                return true;
            }
        }
        for (size_t k = 0; k < p->n_streams; k++) {
            if (p->streams[k]->claiming) {
                return true;
            }
        }
    }
    return false;
}

bool bd_ingest_busy(bd_ingest_t *ing)
{
    uint64_t now = bd_now_us();
    if (!ing->writes_since_us) {
        ing->writes_since_us = now; /* the drain's last phase: its deadline starts now */
    }
    if (now > ing->writes_since_us + WRITE_DRAIN_US) {
        if (ing->n_results + ing->writes_inflight > 0) {
            BD_WARN("ingest",
                    "drain gave up waiting for redis: results_unwritten=%zu; their "
                    "entries stay pending and are answered by another consumer or a restart",
                    ing->n_results + ing->writes_inflight);
        }
        return false;
    }
    return ing->n_results > 0 || ing->writes_inflight > 0;
}

static void free_list(bd_ingest_t *ing, bd_list_t *l)
{
    while (!bd_list_empty(l)) {
        ent_release(ing, BD_CONTAINER_OF(bd_list_first(l), ent_t, link));
    }
}

void bd_ingest_free(bd_ingest_t *ing)
{
    if (!ing) {
        return;
    }
    bd_metrics_set_extra(ing->metrics, NULL, NULL);
    ing->stopping = true;
    rconn_close(&ing->ctl); /* write batches come back to the result list; claims release */
    for (size_t i = 0; i < ing->n_pipes; i++) {
        for (size_t k = 0; k < ing->pipes[i]->n_shards; k++) {
            rconn_close(&ing->pipes[i]->shards[k]->conn);
        }
    }
    ing->freeing = true;
    free_list(ing, &ing->results);
    for (size_t i = 0; i < ing->n_pipes; i++) {
        pipe_t *p = ing->pipes[i];
        free_list(ing, &p->backlog);
        for (size_t k = 0; k < p->n_shards; k++) {
            free(p->shards[k]);
        }
        for (size_t k = 0; k < p->n_streams; k++) {
            free_stream(p->streams[k]);
        }
        free(p->shards);
        free(p->streams);
        free(p->model);
        free(p);
    }
    if (ing->set.n > 0) {
        BD_WARN("ingest", "entries_still_held=%zu at exit (left pending in redis)", ing->set.n);
    }
    if (h2o_timeout_is_linked(&ing->tick)) {
        h2o_timeout_unlink(&ing->tick);
    }
    if (h2o_timeout_is_linked(&ing->kick)) {
        h2o_timeout_unlink(&ing->kick);
    }
    h2o_timeout_dispose(ing->loop, &ing->tick_to);
    h2o_timeout_dispose(ing->loop, &ing->kick_to);
    resolver_free(ing->addrs.res);
    free(ing->set.slots);
    free(ing->pipes);
    free(ing->av);
    free(ing->al);
    bd_buf_dispose(&ing->scratch);
    free(ing);
}
