/* test_infer: the shared infer layer over a real repository, scheduler threads and the core
 * mailbox. The point is the threading contract: whatever finishes a request (a worker running
 * its batch, the timer thread expiring its deadline, a cancel, the repository's loader
 * thread answering a load), its callback runs on the owner thread, from bd_mailbox_drain,
 * and nowhere else. Also: start errors (unknown model, bad requests, model_name rules) and
 * what bd_call_encode writes. Real time is short here (a 60 ms sim batch). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "infer/infer.h"

typedef struct {
    char dir[64];
    bd_metrics_t *metrics;
    bd_mailbox_t *mb;
    bd_repo_t *repo;
    bd_infer_t *inf;
    pthread_t owner;
    int done;                     /* callbacks that ran */
    int off_owner;                /* callbacks that ran on another thread */
    int status[8];                /* by the call's user tag */
    char encoded[8][256];         /* bd_call_encode's JSON by tag, for successes */
    char msgs[8][BD_ERR_MSG_MAX]; /* bd_call_status's message by tag */
    char ids[8][64];              /* bd_call_id by tag */
} fixture_t;

typedef struct {
    fixture_t *f;
    int tag;
} user_t;

static void write_text(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

/* A sim model `name` (FP32 IN [2] -> OUT [2]) with the config keys `extra`, in `dir`. */
static void write_model(const char *dir, const char *name, const char *extra)
{
    char path[256], text[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/1", dir, name);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/config.json", dir, name);
    snprintf(text, sizeof text,
             "{\"backend\":\"sim\",%s,"
             "\"inputs\":[{\"name\":\"IN\",\"datatype\":\"FP32\",\"dims\":[2]}],"
             "\"outputs\":[{\"name\":\"OUT\",\"datatype\":\"FP32\",\"dims\":[2]}]}",
             extra);
    write_text(path, text);
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/bd_test_infer_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    /* One instance, batches of one, 60 ms each: the second request waits in the queue. */
    write_model(f->dir, "slow", "\"max_batch_size\":1,\"sim\":{\"latency_us\":60000}");
    /* Batches of up to 8, no delay: what is queued when the worker looks runs together. */
    write_model(f->dir, "batchy",
                "\"max_batch_size\":8,\"dynamic_batching\":{\"max_queue_delay_us\":0},"
                "\"sim\":{\"latency_us\":0}");
    f->metrics = bd_metrics_new();
    f->mb = bd_mailbox_new(NULL);
    assert_non_null(f->mb);
    bd_repo_opts_t ro = {.metrics = f->metrics, .mailbox = f->mb};
    bd_err_t err = {0};
    f->repo = bd_repo_open(f->dir, &ro, &err);
    assert_non_null(f->repo);
    bd_infer_opts_t io = {.offload_bytes = SIZE_MAX, .max_decode_bytes = SIZE_MAX};
    f->inf = bd_infer_new(f->repo, f->mb, &io);
    assert_non_null(f->inf);
    f->owner = pthread_self();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    bd_infer_free(f->inf);
    bd_repo_free(f->repo);
    bd_mailbox_free(f->mb);
    bd_metrics_free(f->metrics);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void on_done(bd_call_t *call)
{
    user_t *u = bd_call_user(call);
    fixture_t *f = u->f;
    f->done++;
    f->off_owner += !pthread_equal(pthread_self(), f->owner);
    const char *msg = NULL;
    f->status[u->tag] = bd_call_status(call, &msg);
    snprintf(f->msgs[u->tag], sizeof f->msgs[u->tag], "%s", msg);
    snprintf(f->ids[u->tag], sizeof f->ids[u->tag], "%s", bd_call_id(call) ? bd_call_id(call) : "");
    if (f->status[u->tag] == 0) {
        bd_buf_t b;
        bd_buf_init(&b);
        if (u->tag == 4) {
            bd_buf_puts(&b, "PFX"); /* a front end's own framing before the reply */
        }
        size_t header_len = 0;
        assert_int_equal(bd_call_encode(call, &b, &header_len, NULL), 0);
        assert_int_equal(header_len, 0); /* plain JSON */
        snprintf(f->encoded[u->tag], sizeof f->encoded[u->tag], "%.*s", (int)b.len, b.data);
        bd_buf_dispose(&b);
    }
    bd_call_free(call);
}

/* Wait on the mailbox's descriptor, as an event loop does, until `want` callbacks ran. */
static void drain_until(fixture_t *f, int want)
{
    for (int i = 0; i < 200 && f->done < want; i++) {
        struct pollfd p = {.fd = bd_mailbox_fd(f->mb), .events = POLLIN};
        if (poll(&p, 1, 50) > 0) {
            bd_mailbox_drain(f->mb);
        }
    }
    assert_int_equal(f->done, want);
}

static int start(fixture_t *f, int tag, const char *model, const char *body, bd_call_t **call,
                 bd_err_t *err, bd_infer_id_t *err_id)
{
    bd_infer_args_t a = {.protocol = BD_PROTO_WEBSOCKET,
                         .model = model,
                         .model_len = model ? strlen(model) : 0,
                         .body_names_model = true,
                         .body = body,
                         .len = strlen(body),
                         .header_len = strlen(body),
                         .user_size = sizeof(user_t),
                         .err_id = err_id};
    int rc = bd_infer_start(f->inf, &a, on_done, call, err);
    if (rc == 0) {
        user_t *u = bd_call_user(*call);
        u->f = f;
        u->tag = tag;
    }
    return rc;
}

#define REQ(extra)                                                                                 \
    "{\"model_name\":\"slow\"" extra ",\"inputs\":[{\"name\":\"IN\",\"datatype\":\"FP32\","        \
    "\"shape\":[1,2],\"data\":[1,2]}]}"

static void test_every_completion_runs_on_the_owner_thread(void **state)
{
    fixture_t *f = *state;
    bd_err_t err = {0};
    bd_call_t *a = NULL, *b = NULL, *c = NULL;
    /* a runs on the worker; b's 1 ms deadline passes while a runs (the timer thread
     * completes it); c waits behind a and is cancelled. */
    assert_int_equal(start(f, 0, NULL, REQ(",\"id\":\"a\""), &a, &err, NULL), 0);
    assert_int_equal(start(f, 1, NULL, REQ(",\"parameters\":{\"timeout\":1000}"), &b, &err, NULL),
                     0);
    assert_int_equal(start(f, 2, NULL, REQ(""), &c, &err, NULL), 0);
    assert_int_equal(bd_infer_inflight(f->inf), 3);
    bd_call_cancel(c);
    /* Nothing runs before the owner drains: not even the cancel's own completion. */
    assert_int_equal(f->done, 0);
    drain_until(f, 3);
    assert_int_equal(f->off_owner, 0);
    assert_int_equal(f->status[0], 0);
    assert_int_equal(f->status[1], BD_ETIMEOUT);
    assert_int_equal(f->status[2], BD_ECANCELLED);
    assert_int_equal(bd_infer_inflight(f->inf), 0);
    assert_string_equal(f->encoded[0], "{\"model_name\":\"slow\",\"model_version\":\"1\",\"id\":"
                                       "\"a\",\"outputs\":[{\"name\":\"OUT\",\"datatype\":"
                                       "\"FP32\",\"shape\":[1,2],\"data\":[1,2]}]}");
    bd_model_t *m = NULL;
    assert_int_equal(bd_repo_find(f->repo, "slow", 4, NULL, 0, &m, NULL), 0);
    bd_model_metrics_t *mm = bd_model_metrics(m);
    assert_int_equal(bd_metrics_get_requests_by(mm, BD_PROTO_WEBSOCKET, BD_OUTCOME_SUCCESS), 1);
    assert_int_equal(bd_metrics_get_requests_by(mm, BD_PROTO_WEBSOCKET, BD_OUTCOME_TIMEOUT), 1);
    assert_int_equal(bd_metrics_get_requests_by(mm, BD_PROTO_WEBSOCKET, BD_OUTCOME_CANCELLED), 1);
    assert_int_equal(bd_metrics_get_requests_by(mm, BD_PROTO_HTTP, BD_OUTCOME_SUCCESS), 0);
}

/* group_submits: the requests started between two flushes reach the model's idle worker
 * together, as one batch; before the flush none runs. */
static void test_grouped_submits_form_one_batch_at_the_flush(void **state)
{
    fixture_t *f = *state;
    bd_infer_free(f->inf);
    bd_infer_opts_t io = {
        .offload_bytes = SIZE_MAX, .max_decode_bytes = SIZE_MAX, .group_submits = true};
    f->inf = bd_infer_new(f->repo, f->mb, &io);
    assert_non_null(f->inf);
    struct timespec pause = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
    nanosleep(&pause, NULL); /* the model's worker is asleep on its empty queue by now */
    const char *body = "{\"inputs\":[{\"name\":\"IN\",\"datatype\":\"FP32\",\"shape\":[1,2],"
                       "\"data\":[1,2]}]}";
    bd_err_t err = {0};
    bd_call_t *calls[5];
    for (int i = 0; i < 5; i++) {
        assert_int_equal(start(f, i, "batchy", body, &calls[i], &err, NULL), 0);
    }
    bd_model_t *m = NULL;
    assert_int_equal(bd_repo_find(f->repo, "batchy", 6, NULL, 0, &m, NULL), 0);
    bd_model_metrics_t *mm = bd_model_metrics(m);
    nanosleep(&pause, NULL);
    assert_int_equal(bd_metrics_get_executions(mm), 0); /* held until the flush */
    bd_infer_flush(f->inf);
    drain_until(f, 5);
    assert_int_equal(bd_metrics_get_executions(mm), 1);
    assert_int_equal(bd_metrics_get_items(mm), 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(f->status[i], 0);
    }
}

static void on_loaded(void *ctx, int rc, const char *msg)
{
    fixture_t *f = ctx;
    (void)msg;
    f->done++;
    f->off_owner += !pthread_equal(pthread_self(), f->owner);
    f->status[7] = rc;
}

static void test_repository_loads_answer_through_the_same_mailbox(void **state)
{
    fixture_t *f = *state;
    bd_err_t err = {0};
    assert_int_equal(bd_repo_load(f->repo, "slow", 4, on_loaded, f, &err), 0);
    assert_true(bd_repo_busy(f->repo));
    drain_until(f, 1);
    assert_int_equal(f->off_owner, 0);
    assert_int_equal(f->status[7], 0);
    assert_false(bd_repo_busy(f->repo));
}

static void test_start_errors_name_the_problem_and_keep_the_id(void **state)
{
    fixture_t *f = *state;
    bd_err_t err = {0};
    bd_call_t *call = NULL;
    bd_infer_id_t eid = {.found = true};
    bd_infer_id_t *id = &eid;
    bd_buf_init(&eid.text);
    assert_int_equal(
        start(f, 0, NULL, "{\"model_name\":\"nope\",\"id\":\"x1\",\"inputs\":[]}", &call, &err, id),
        BD_EINVAL); /* empty inputs is a decode error, found first */
    assert_true(eid.found);
    assert_string_equal(eid.text.data, "x1");
    assert_int_equal(start(f, 0, NULL,
                           "{\"model_name\":\"nope\",\"id\":\"x2\",\"inputs\":[{\"name\":\"IN\","
                           "\"datatype\":\"FP32\",\"shape\":[1,2],\"data\":[1,2]}]}",
                           &call, &err, id),
                     BD_ENOTFOUND);
    assert_true(eid.found);
    assert_string_equal(eid.text.data, "x2");
    assert_string_equal(err.msg, "unknown model 'nope'");
    assert_int_equal(start(f, 0, NULL,
                           "{\"inputs\":[{\"name\":\"IN\",\"datatype\":\"FP32\","
                           "\"shape\":[1,2],\"data\":[1,2]}]}",
                           &call, &err, id),
                     BD_EINVAL);
    assert_false(eid.found);
    assert_non_null(strstr(err.msg, "\"model_name\""));
    /* Any length, and "" is an id too. */
    char body[600];
    snprintf(body, sizeof body, "{\"id\":\"%0300d\",\"inputs\":[]}", 7);
    assert_int_equal(start(f, 0, "slow", body, &call, &err, id), BD_EINVAL);
    assert_true(eid.found);
    assert_int_equal(eid.text.len, 300);
    assert_int_equal(start(f, 0, "slow", "{\"id\":\"\",\"inputs\":[]}", &call, &err, id),
                     BD_EINVAL);
    assert_true(eid.found);
    assert_string_equal(eid.text.data, "");
    assert_int_equal(start(f, 0, "slow",
                           "{\"model_name\":\"other\",\"inputs\":[{\"name\":\"IN\","
                           "\"datatype\":\"FP32\",\"shape\":[1,2],\"data\":[1,2]}]}",
                           &call, &err, id),
                     BD_EINVAL);
    assert_string_equal(err.msg, "\"model_name\" is 'other' but this stream serves model 'slow'");
    assert_int_equal(start(f, 0, "slow",
                           "{\"inputs\":[{\"name\":\"IN\",\"datatype\":\"FP32\","
                           "\"shape\":[1,2],\"data\":[1,2,3]}]}",
                           &call, &err, id),
                     BD_EINVAL);
    assert_string_equal(err.msg, "input 'IN': expected 2 values for shape [1,2], got 3");
    bd_buf_dispose(&eid.text);
    assert_int_equal(bd_infer_inflight(f->inf), 0);
    assert_int_equal(f->done, 0);
}

/* Bodies over opts.offload_bytes decode on the decode thread: their decode errors come back
 * through done (with the request's id), a cancel while decoding never queues the request,
 * and past max_decode_bytes a start is refused at once. Replies over offload_bytes / 4 of
 * JSON outputs are encoded there too, and bd_call_encode hands them over or appends them. */
static void test_large_bodies_decode_off_the_loop(void **state)
{
    fixture_t *f = *state;
    bd_infer_free(f->inf);
    bd_infer_opts_t io = {.offload_bytes = 0, .max_decode_bytes = 1000};
    f->inf = bd_infer_new(f->repo, f->mb, &io);
    assert_non_null(f->inf);
    bd_err_t err = {0};
    bd_call_t *ok = NULL, *bad = NULL, *gone = NULL, *refused = NULL;
    assert_int_equal(start(f, 0, NULL, REQ(",\"id\":\"big\""), &ok, &err, NULL), 0);
    assert_int_equal(start(f, 1, "slow",
                           "{\"id\":\"b1\",\"inputs\":[{\"name\":\"IN\",\"datatype\":"
                           "\"FP32\",\"shape\":[1,2],\"data\":[1,2,3]}]}",
                           &bad, &err, NULL),
                     0); /* its error comes later, through done */
    assert_int_equal(start(f, 2, NULL, REQ(",\"id\":\"c\""), &gone, &err, NULL), 0);
    bd_call_cancel(gone);
    bd_call_t *appended = NULL;
    assert_int_equal(start(f, 4, NULL, REQ(",\"id\":\"app\""), &appended, &err, NULL), 0);
    /* Four bodies of about 100 bytes are decoding; a long one would pass 1000. */
    char big[1200];
    memset(big, ' ', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memcpy(big, "{\"id\":\"x\"}", 10);
    assert_int_equal(start(f, 3, NULL, big, &refused, &err, NULL), BD_EFULL);
    assert_non_null(strstr(err.msg, "--max-decode-bytes"));
    assert_int_equal(bd_infer_inflight(f->inf), 4);
    drain_until(f, 4);
    assert_int_equal(f->off_owner, 0);
    assert_int_equal(f->status[0], 0);
    assert_non_null(strstr(f->encoded[0], "\"id\":\"big\""));
    assert_non_null(strstr(f->encoded[0], "\"model_name\":\"slow\""));
    assert_int_equal(f->status[4], 0);
    assert_int_equal(strncmp(f->encoded[4], "PFX{", 4), 0);
    assert_non_null(strstr(f->encoded[4], "\"model_name\":\"slow\""));
    assert_non_null(strstr(f->encoded[4], "\"id\":\"app\""));
    assert_int_equal(f->status[1], BD_EINVAL);
    assert_string_equal(f->ids[1], "b1");
    assert_string_equal(f->msgs[1], "input 'IN': expected 2 values for shape [1,2], got 3");
    assert_int_equal(f->status[2], BD_ECANCELLED);
    bd_model_t *m = NULL;
    assert_int_equal(bd_repo_find(f->repo, "slow", 4, NULL, 0, &m, NULL), 0);
    bd_model_metrics_t *mm = bd_model_metrics(m);
    assert_int_equal(bd_metrics_get_requests_by(mm, BD_PROTO_WEBSOCKET, BD_OUTCOME_SUCCESS), 2);
    assert_int_equal(bd_metrics_get_requests_by(mm, BD_PROTO_WEBSOCKET, BD_OUTCOME_INVALID), 1);
    assert_int_equal(bd_metrics_get_requests_by(mm, BD_PROTO_WEBSOCKET, BD_OUTCOME_CANCELLED), 1);
    assert_int_equal(bd_metrics_get_executions(mm), 2); /* the cancelled one never ran */
    assert_int_equal(bd_infer_inflight(f->inf), 0);
}

/* A compressed body whose client leaves while the decode thread inflates it: the decode thread
 * reads the call's cancelled flag between its steps and stops there, rather than inflate the
 * rest for nobody. The body is a zlib stream (RFC 1950) of 8 million empty stored blocks (RFC
 * 1951 §3.2.4; 40 MB that inflate to nothing, a few hundred ms of zlib's time in 1 MiB input
 * steps), so the cancel, made right after the start, lands long before the end. */
static void test_cancel_stops_inflating_on_the_decode_thread(void **state)
{
    fixture_t *f = *state;
    size_t blocks = 8u << 20, len = 2 + blocks * 5 + 5 + 4;
    unsigned char *z = malloc(len), *p = z;
    assert_non_null(z);
    *p++ = 0x78;
    *p++ = 0x01;
    for (size_t i = 0; i < blocks; i++, p += 5) {
        memcpy(p, "\x00\x00\x00\xff\xff", 5); /* not final, stored, LEN 0, NLEN 0xffff */
    }
    memcpy(p, "\x01\x00\x00\xff\xff\x00\x00\x00\x01", 9); /* final, empty; Adler-32 of "" */
    bd_infer_args_t a = {.protocol = BD_PROTO_HTTP,
                         .model = "slow",
                         .model_len = 4,
                         .body = (const char *)z,
                         .len = len,
                         .header_len = SIZE_MAX,
                         .body_kept = true,
                         .coding = BD_ZIP_DEFLATE,
                         .user_size = sizeof(user_t)};
    bd_call_t *call = NULL;
    bd_err_t err = {0};
    assert_int_equal(bd_infer_start(f->inf, &a, on_done, &call, &err), 0);
    user_t *u = bd_call_user(call);
    u->f = f;
    u->tag = 0;
    bd_call_cancel(call);
    drain_until(f, 1);
    assert_int_equal(f->status[0], BD_ECANCELLED);
    assert_string_equal(f->msgs[0], "the request was cancelled while its body was inflated");
    bd_model_t *m = NULL;
    assert_int_equal(bd_repo_find(f->repo, "slow", 4, NULL, 0, &m, NULL), 0);
    bd_model_metrics_t *mm = bd_model_metrics(m);
    assert_int_equal(bd_metrics_get_requests_by(mm, BD_PROTO_HTTP, BD_OUTCOME_CANCELLED), 1);
    assert_int_equal(bd_metrics_get_executions(mm), 0);
    assert_int_equal(bd_infer_inflight(f->inf), 0);
    free(z);
}

/* ---- the mailbox itself: many producers, one owner ----------------------------------- */

#define PRODUCERS 4
#define PER_PRODUCER 2000

typedef struct {
    bd_mail_t mail;
    int producer;
    int seq;
} note_t;

static note_t notes[PRODUCERS][PER_PRODUCER];
static int next_seq[PRODUCERS];
static int notes_seen;
static int notes_out_of_order;
static pthread_t mail_owner;
static int notes_off_owner;

static void on_note(bd_mail_t *mail)
{
    note_t *n = BD_CONTAINER_OF(mail, note_t, mail);
    notes_out_of_order += n->seq != next_seq[n->producer];
    next_seq[n->producer] = n->seq + 1;
    notes_off_owner += !pthread_equal(pthread_self(), mail_owner);
    notes_seen++;
}

typedef struct {
    bd_mailbox_t *mb;
    int producer;
} producer_t;

static void *produce(void *arg)
{
    producer_t *p = arg;
    for (int i = 0; i < PER_PRODUCER; i++) {
        note_t *n = &notes[p->producer][i];
        n->producer = p->producer;
        n->seq = i;
        n->mail.cb = on_note;
        bd_mailbox_post(p->mb, &n->mail);
    }
    return NULL;
}

static void test_mailbox_many_producers_in_order_on_the_owner(void **state)
{
    (void)state;
    bd_mailbox_t *mb = bd_mailbox_new(NULL);
    assert_non_null(mb);
    assert_int_equal(bd_mailbox_drain(mb), 0);
    mail_owner = pthread_self();
    pthread_t t[PRODUCERS];
    producer_t p[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++) {
        p[i] = (producer_t){mb, i};
        assert_int_equal(pthread_create(&t[i], NULL, produce, &p[i]), 0);
    }
    /* Drain as a loop does: only when the descriptor says mail waits. */
    for (int spins = 0; notes_seen < PRODUCERS * PER_PRODUCER && spins < 10000; spins++) {
        struct pollfd pf = {.fd = bd_mailbox_fd(mb), .events = POLLIN};
        if (poll(&pf, 1, 100) > 0) {
            bd_mailbox_drain(mb);
        }
    }
    for (int i = 0; i < PRODUCERS; i++) {
        pthread_join(t[i], NULL);
    }
    bd_mailbox_drain(mb);
    assert_int_equal(notes_seen, PRODUCERS * PER_PRODUCER);
    assert_int_equal(notes_out_of_order, 0);
    assert_int_equal(notes_off_owner, 0);
    struct pollfd pf = {.fd = bd_mailbox_fd(mb), .events = POLLIN};
    assert_int_equal(poll(&pf, 1, 0), 0); /* nothing left: no wake-up left either */
    bd_mailbox_free(mb);
}

static int held_ran;

static void on_held_note(bd_mail_t *mail)
{
    (void)mail;
    held_ran++;
}

static void *post_one(void *arg)
{
    void **a = arg;
    bd_mailbox_post(a[0], a[1]);
    return NULL;
}

static bool mail_signalled(bd_mailbox_t *mb)
{
    struct pollfd pf = {.fd = bd_mailbox_fd(mb), .events = POLLIN};
    return poll(&pf, 1, 0) > 0;
}

/* While the owner holds its mailbox its own posts write no wake-up and drain_held runs them;
 * another thread's post still wakes the loop, and after drain_held the owner's posts do too. */
static void test_mailbox_hold_skips_the_owners_own_wake_ups(void **state)
{
    (void)state;
    bd_mailbox_t *mb = bd_mailbox_new(NULL);
    assert_non_null(mb);
    bd_mail_t a = {.cb = on_held_note}, b = {.cb = on_held_note}, c = {.cb = on_held_note};
    held_ran = 0;
    bd_mailbox_hold(mb);
    bd_mailbox_post(mb, &a);
    assert_false(mail_signalled(mb));
    assert_int_equal(bd_mailbox_drain_held(mb), 1);
    assert_int_equal(held_ran, 1);
    assert_false(mail_signalled(mb));

    bd_mailbox_hold(mb); /* the hold is this thread's: another thread's post wakes */
    pthread_t t;
    void *args[2] = {mb, &b};
    assert_int_equal(pthread_create(&t, NULL, post_one, args), 0);
    pthread_join(t, NULL);
    assert_true(mail_signalled(mb));
    assert_int_equal(bd_mailbox_drain_held(mb), 1);
    assert_int_equal(held_ran, 2);

    bd_mailbox_post(mb, &c); /* no longer held: this post wakes as any other */
    assert_true(mail_signalled(mb));
    assert_int_equal(bd_mailbox_drain(mb), 1);
    assert_int_equal(held_ran, 3);
    assert_false(mail_signalled(mb));
    bd_mailbox_free(mb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_every_completion_runs_on_the_owner_thread, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_grouped_submits_form_one_batch_at_the_flush, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_repository_loads_answer_through_the_same_mailbox,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_errors_name_the_problem_and_keep_the_id, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_large_bodies_decode_off_the_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_stops_inflating_on_the_decode_thread, setup,
                                        teardown),
        cmocka_unit_test(test_mailbox_many_producers_in_order_on_the_owner),
        cmocka_unit_test(test_mailbox_hold_skips_the_owners_own_wake_ups),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
