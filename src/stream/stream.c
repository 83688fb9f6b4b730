/* stream.c: WebSocket streaming (see stream.h), on h2o's HTTP/1.1 upgrade and wslay.
 *
 * h2o answers the handshake (101, Sec-WebSocket-Accept) and hands over the raw socket; from
 * then on each connection is a conn_t with its own wslay context whose callbacks read from
 * and write to that socket. We drive wslay ourselves (not h2o's websocket wrapper) so that
 * reading can stop at the in-flight cap:
 *
 *   load = requests started and not yet answered + replies queued in wslay + parked messages
 *
 * The recv callback hands wslay no bytes while load >= max_inflight, and the socket is not
 * read meanwhile, so TCP pushes back on the client. Messages wslay had already taken from
 * the socket when the cap was reached (at most one 4 KiB read and one message) are parked,
 * copied, and started when replies have gone out. Bytes wslay produces go to `pending` (at
 * most PENDING_MAX; past that wslay keeps them queued, which counts in load), and one h2o
 * write at a time carries them out of `writing`.
 *
 * Data messages are put together here, not by wslay (its no-buffering mode): wslay kept each
 * frame's payload in two allocations of its own and copied them into a third at the end, so a
 * message sent as 1-byte fragments cost ~100 bytes of memory a byte; here each frame's bytes
 * are appended to one buffer per socket (`msg`), and the message length (--max-body-bytes,
 * 1009 past it) is checked over all its fragments.
 *
 * The bytes of the messages a socket holds (started and not answered, or parked), those of the
 * message being put together, those its input buffer holds unparsed and those of its
 * replies not yet written count in the server's budget (--max-buffered-bytes), which the HTTP
 * front end shares: a socket holding messages or unwritten replies also stops reading while
 * the budget is used up, and starts again as its replies go out (a client that never reads
 * them holds at most what was in flight when it stopped). One holding none is read
 * regardless, so no socket waits on others' replies.
 *
 * Closing: a close frame from the client, a dropped connection, a protocol error (1002, by
 * wslay), an oversized message (1009), text that is not UTF-8 (1007), an idle
 * socket (1000), the drain (1001) or an API key a reload removed (1008, once what was in
 * flight was answered). Queued requests of a socket that went away are
 * cancelled; results for it are dropped when they come back. A socket not read (at its cap or
 * the budget) with requests in flight or parked is watched every WATCH_MS for the peer's FIN
 * or reset (poll POLLRDHUP), since h2o sees neither while it does not read; one that went is
 * closed at once. After we sent a close frame we
 * stop writing (SHUT_WR; not under TLS, where closing the socket sends the close_notify first)
 * and wait up to CLOSE_WAIT_MS for the client's close, then close.
 *
 * Ownership: a conn is freed once its socket is closed and its last call came back; it is
 * never freed inside a wslay callback or in the middle of an event's handling: every entry
 * point (socket read, write done, call done, timers) ends with release_if_done.
 *
 * Threads: the event-loop thread only. */
#include "stream/stream.h"
#include "stream/stream_internal.h"

#include <ctype.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <h2o.h>
#include <h2o/http1.h>
#include <h2o/websocket.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <wslay/wslay.h>

#define PENDING_MAX (256u * 1024)
/* Bytes read from the socket and not yet taken by wslay above which the socket is not read:
 * wslay takes nothing while a control frame it must answer (a pong) waits to be sent. */
#define UNREAD_MAX (256u * 1024)
#define RCVBUF_BYTES (256 * 1024) /* SO_RCVBUF of a WebSocket (Linux doubles it) */
#define RECV_ROUNDS 64 /* wslay_event_recv calls per turn, each after the answers it queued */
#define CLOSE_WAIT_MS 2000
#define WATCH_MS 10 /* how often a socket not read is checked for the client's leaving */
#define MAX_NAME 256
#define ID_KEEP 4096        /* a larger id's scratch memory is freed once its error is sent */
#define OUT_KEEP (1u << 20) /* the reply scratch keeps this much between replies */

typedef struct conn conn_t;

struct bd_stream {
    h2o_evloop_t *loop;
    bd_infer_t *inf;
    bd_metrics_t *metrics;
    bd_stream_opts_t opts;
    bd_list_t conns; /* conn_t.link: every conn whose socket is open */
    size_t n_conns;
    h2o_timeout_t idle_timeout;
    h2o_timeout_t close_timeout;
    h2o_timeout_t watch_timeout;
    bd_buf_t out;         /* reply scratch (trimmed after a large reply) */
    bd_infer_id_t err_id; /* the id of a message being refused (trimmed likewise) */
    bool stopping;
};

typedef struct {
    bd_list_t link;
    bool binary;
    size_t len;
    char data[];
} parked_t;

/* The WebSocket state a call carries (bd_call_user). */
typedef struct {
    conn_t *conn;
    bd_call_t *call;
    bd_list_t link; /* conn->calls */
    size_t bytes;   /* its message's, in the budget until done */
} ws_call_t;

struct conn {
    bd_stream_t *st;
    bd_list_t link;
    h2o_socket_t *sock; /* NULL once closed */
    wslay_event_context_ptr ws;
    char model[MAX_NAME];
    size_t model_len; /* 0: requests name their model */
    char version[32];
    size_t version_len;
    size_t inflight; /* calls started whose done has not run */
    /* its parts of st->opts.budget: message bytes in flight and parked, those of the message
     * wslay is putting together, those the socket's input buffer holds, and those of replies
     * not yet written (queued in wslay, then in pending and writing) */
    size_t held, assembling, unread, replying;
    size_t queued;   /* reply bytes queued in wslay and not yet handed to ws_send */
    bd_list_t calls; /* ws_call_t.link, the calls in flight */
    bd_list_t parked;
    size_t n_parked;
    uint64_t next_id;
    h2o_timeout_entry_t timer; /* idle, or the wait for the client's close */
    h2o_timeout_entry_t watch; /* while not read with work in hand: has the client gone? */
    bd_buf_t pending;          /* bytes wslay produced, not yet handed to h2o */
    bd_buf_t writing;          /* bytes of the h2o write in flight */
    bool write_busy;
    bool worked; /* working() when process last looked: the idle timer restarts after */
    bool reading;
    /* our close went out: waiting for the client's (the socket shut for writing unless TLS) */
    bool shut_wr;
    bool closing;               /* we queued a close frame */
    bd_ws_frames_t frames;      /* headers of the bytes handed to wslay */
    bool broken;                /* a bad frame header came: the rest of the input is dropped */
    bd_buf_t msg;               /* the data message being put together, its frames' bytes */
    bool msg_binary;            /* its opcode was binary */
    bool frame_data, frame_fin; /* the frame wslay is reading: a data frame; the message's last */
    bd_gate_who_t who;          /* the caller admitted at the upgrade (its key, or address) */
    bool revoked;               /* a reload removed its key: 401 to what is left, then close 1008 */
};

/* ---- helpers ---------------------------------------------------------------------------- */

/* Requests started and not answered, plus replies wslay still holds. */
static size_t busy(conn_t *c)
{
    return c->inflight + wslay_event_get_queued_msg_count(c->ws);
}

static size_t load(conn_t *c)
{
    return busy(c) + c->n_parked;
}

/* Requests in flight as the docs count them (read, and their reply not yet written, which
 * count_replying keeps in `replying`), or messages held back: the idle timeout does not run
 * meanwhile. */
static bool working(conn_t *c)
{
    return load(c) > 0 || c->replying > 0;
}

/* Whether wslay may take more bytes from the socket: under the in-flight cap, and, while the
 * socket holds messages that will be answered or replies that will go out (and so let go),
 * under the shared budget. */
static bool may_read(conn_t *c)
{
    const bd_budget_t *b = c->st->opts.budget;
    return load(c) < c->st->opts.max_inflight &&
           !((c->held > 0 || c->replying > 0) && b->max && b->used >= b->max);
}

/* Set one of c's parts of the budget (held, assembling or unread) to `now` bytes. */
static void recount(conn_t *c, size_t *part, size_t now)
{
    bd_budget_t *b = c->st->opts.budget;
    b->used = b->used - *part + now;
    *part = now;
    bd_metrics_http_buffered_set(c->st->metrics, (int64_t)b->used);
}

/* Count `add` more and `drop` fewer message bytes as held by c. */
static void hold(conn_t *c, size_t add, size_t drop)
{
    recount(c, &c->held, c->held + add - drop);
}

/* Recount the bytes of c's replies not yet written (0 once it is closed): a client that
 * does not read them holds them, as it holds its requests. */
static void count_replying(conn_t *c)
{
    if (!c->ws || wslay_event_get_queued_msg_count(c->ws) == 0) {
        c->queued = 0; /* what ws_send took included frame headers */
    }
    recount(c, &c->replying, c->ws ? c->queued + c->pending.len + c->writing.len : 0);
}

/* Recount the bytes c's socket has read and wslay has not taken (0 once it is closed). */
static void count_unread(conn_t *c)
{
    recount(c, &c->unread, c->sock ? c->sock->input->size : 0);
}

static void queue_frame(conn_t *c, uint8_t opcode, const char *data, size_t len)
{
    struct wslay_event_msg m = {opcode, (const uint8_t *)data, len};
    if (wslay_event_queue_msg(c->ws, &m) != 0) {
        BD_DEBUG("stream", "reply dropped: the socket is closing");
        return;
    }
    c->queued += len;
    count_replying(c);
}

static void queue_close(conn_t *c, uint16_t code, const char *reason)
{
    if (!c->closing) {
        c->closing = true;
        wslay_event_queue_close(c->ws, code, (const uint8_t *)reason, strlen(reason));
    }
}

static void send_error(conn_t *c, const char *id, int code, const char *msg)
{
    /* The infer layer's sentences are HTTP's: what it calls the request body is the message
     * here ("request body is not valid JSON: ..." reads "message is not valid JSON: ..."). */
    static const char *const said[][2] = {{"request body", "message"},
                                          {"the request body", "the message"}};
    char reworded[BD_ERR_MSG_MAX];
    for (size_t i = 0; i < sizeof said / sizeof said[0]; i++) {
        size_t n = strlen(said[i][0]);
        if (strncmp(msg, said[i][0], n) == 0 && msg[n] == ' ') {
            snprintf(reworded, sizeof reworded, "%s%s", said[i][1], msg + n);
            msg = reworded;
            break;
        }
    }
    bd_buf_t *b = &c->st->out;
    bd_buf_reset(b);
    bd_buf_puts(b, "{\"id\":");
    bd_buf_json_string(b, id, strlen(id));
    bd_buf_puts(b, ",\"error\":");
    bd_buf_json_string(b, msg, strlen(msg));
    bd_buf_printf(b, ",\"status\":%d}", bd_infer_http_status(code));
    if (!b->failed) {
        queue_frame(c, WSLAY_TEXT_FRAME, b->data, b->len);
    }
    bd_buf_trim(b, OUT_KEEP); /* wslay copied it: a huge id is not kept */
}

/* A server-made id, unique on the socket, for a request that has none. */
static const char *assign_id(conn_t *c, char *id, size_t cap)
{
    snprintf(id, cap, "batchd-%llu", (unsigned long long)++c->next_id);
    return id;
}

/* A client's own id of the form assign_id makes ("batchd-N") moves the count past N, so that
 * no id the server makes later on the socket is one its client already used. */
static void note_client_id(conn_t *c, const char *id)
{
    static const char prefix[] = "batchd-";
    if (!id || strncmp(id, prefix, sizeof prefix - 1) != 0) {
        return;
    }
    const char *d = id + sizeof prefix - 1;
    uint64_t n = 0;
    for (; *d >= '0' && *d <= '9' && n < UINT64_MAX / 10; d++) {
        n = n * 10 + (uint64_t)(*d - '0');
    }
    if (*d == '\0' && d > id + sizeof prefix - 1 && n > c->next_id) {
        c->next_id = n;
    }
}

/* Answer a message refused before it started, under the id it was read with (any length, ""
 * included), else one of assign_id's. */
static void refuse_message(conn_t *c, int code, const char *msg)
{
    bd_infer_id_t *rid = &c->st->err_id;
    char own[32];
    if (rid->found) {
        note_client_id(c, rid->text.data);
    }
    send_error(c, rid->found ? rid->text.data : assign_id(c, own, sizeof own), code, msg);
    bd_buf_trim(&rid->text, ID_KEEP);
    rid->found = false;
}

/* ---- closing ---------------------------------------------------------------------------- */

static void close_socket(conn_t *c)
{
    if (!c->sock) {
        return;
    }
    bd_stream_t *st = c->st;
    /* Queued requests of a socket that went away are never executed; running ones finish
     * and their results are dropped. */
    for (bd_list_t *n = c->calls.next; n != &c->calls; n = n->next) {
        bd_call_cancel(BD_CONTAINER_OF(n, ws_call_t, link)->call);
    }
    while (!bd_list_empty(&c->parked)) {
        bd_list_t *n = bd_list_first(&c->parked);
        bd_list_unlink(n);
        parked_t *p = BD_CONTAINER_OF(n, parked_t, link);
        hold(c, 0, p->len);
        free(p);
    }
    c->n_parked = 0;
    if (h2o_timeout_is_linked(&c->timer)) {
        h2o_timeout_unlink(&c->timer);
    }
    if (h2o_timeout_is_linked(&c->watch)) {
        h2o_timeout_unlink(&c->watch);
    }
    h2o_socket_close(c->sock);
    c->sock = NULL;
    count_unread(c);
    recount(c, &c->assembling, 0);
    bd_buf_dispose(&c->msg);
    wslay_event_context_free(c->ws);
    c->ws = NULL;
    count_replying(c);
    bd_list_unlink(&c->link);
    st->n_conns--;
    bd_metrics_websocket_connections_add(st->metrics, -1);
}

/* The end of every entry point: free the conn once nothing refers to it. */
static void release_if_done(conn_t *c)
{
    if (!c->sock && c->inflight == 0) {
        bd_buf_dispose(&c->pending);
        bd_buf_dispose(&c->writing);
        free(c);
    }
}

static void on_close_wait(h2o_timeout_entry_t *entry)
{
    conn_t *c = H2O_STRUCT_FROM_MEMBER(conn_t, timer, entry);
    close_socket(c); /* the client never answered our close frame */
    release_if_done(c);
}

static void on_idle(h2o_timeout_entry_t *entry);
static void process(conn_t *c);

/* Start or keep the idle timer (nothing in flight) or the close wait. */
static void arm_timer(conn_t *c, h2o_timeout_t *t, h2o_timeout_cb cb)
{
    if (h2o_timeout_is_linked(&c->timer)) {
        h2o_timeout_unlink(&c->timer);
    }
    c->timer.cb = cb;
    h2o_timeout_link(c->st->loop, t, &c->timer);
}

/* ---- writing ---------------------------------------------------------------------------- */

static void on_write_done(h2o_socket_t *sock, const char *err)
{
    conn_t *c = sock->data;
    c->write_busy = false;
    bd_buf_reset(&c->writing);
    count_replying(c);
    if (err) {
        close_socket(c);
    } else {
        process(c);
    }
    release_if_done(c);
}

/* Move what wslay has queued towards the socket; after our close frame went out, stop
 * writing and wait for the client's close (or close at once when it already came). */
static void flush(conn_t *c)
{
    if (!c->sock) {
        return;
    }
    if (wslay_event_want_write(c->ws) && wslay_event_send(c->ws) != 0) {
        close_socket(c);
        return;
    }
    count_replying(c);
    if (!c->write_busy && c->pending.len > 0) {
        bd_buf_t t = c->writing;
        c->writing = c->pending;
        c->pending = t;
        c->write_busy = true;
        h2o_iovec_t iov = h2o_iovec_init(c->writing.data, c->writing.len);
        h2o_socket_write(c->sock, &iov, 1, on_write_done);
        return;
    }
    if (c->write_busy || !wslay_event_get_close_sent(c->ws) || wslay_event_want_write(c->ws)) {
        return;
    }
    /* wslay queues some closes itself (1009, 1002): from now on no idle timer may replace the
     * close wait below. */
    c->closing = true;
    if (wslay_event_get_close_received(c->ws)) {
        close_socket(c);
    } else if (!c->shut_wr) {
        /* Under TLS the socket is left open: a TCP FIN now would end the TLS stream without a
         * close_notify (a truncation to the client), and the close_notify h2o_socket_close
         * writes later would go to a half-closed socket. Only the wait is armed then. */
        c->shut_wr = true;
        if (!c->sock->ssl) {
            shutdown(h2o_socket_get_fd(c->sock), SHUT_WR);
        }
        arm_timer(c, &c->st->close_timeout, on_close_wait);
    }
}

/* ---- requests --------------------------------------------------------------------------- */

static void on_call_done(bd_call_t *call)
{
    ws_call_t *wc = bd_call_user(call);
    conn_t *c = wc->conn;
    bd_list_unlink(&wc->link);
    c->inflight--;
    hold(c, 0, wc->bytes);
    note_client_id(c, bd_call_id(call)); /* one decoded off the loop is known only now */
    if (c->sock && !wslay_event_get_close_sent(c->ws)) {
        bd_buf_t *b = &c->st->out;
        bd_buf_reset(b);
        bd_buf_append(b, "\0\0\0\0", 4); /* the length prefix of a binary reply */
        size_t header_len = 0;
        bd_err_t err = {0};
        int rc = bd_call_encode(call, b, &header_len, &err);
        if (rc != 0) {
            send_error(c, bd_call_id(call), rc, err.msg);
        } else if (header_len == 0) {
            queue_frame(c, WSLAY_TEXT_FRAME, b->data + 4, b->len - 4);
        } else {
            uint32_t n = (uint32_t)header_len;
            unsigned char le[4] = {n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, n >> 24};
            memcpy(b->data, le, 4);
            queue_frame(c, WSLAY_BINARY_FRAME, b->data, b->len);
        }
        bd_buf_trim(b, OUT_KEEP); /* wslay copied the reply */
    }
    bd_call_free(call);
    if (c->sock) {
        process(c);
    }
    release_if_done(c);
}

/* The gate's word on a message before it is decoded: its key was revoked (401; process then
 * closes with 1008 once the replies went out, since wslay sends a queued close before queued
 * messages) or it is over the rate limit (429). Returns false after answering. */
static bool admit_message(conn_t *c, bool binary, const char *data, size_t len)
{
    bd_gate_t *g = c->st->opts.gate;
    bool valid = !c->revoked && bd_gate_still_valid(g, &c->who);
    uint64_t retry = 0;
    bd_err_t err = {0}, limited = {0};
    if (valid && bd_gate_take(g, &c->who, &retry, &limited)) {
        return true;
    }
    bd_infer_id_t *rid = &c->st->err_id;
    size_t n = 0;
    rid->found = binary ? bd_ws_binary_split((const unsigned char *)data, len, &n, &err) == 0 &&
                              bd_ws_peek_id(data + 4, n, &rid->text)
                        : bd_ws_peek_id(data, len, &rid->text);
    if (!valid) {
        c->revoked = true;
        refuse_message(c, BD_EAUTH,
                       "the API key this WebSocket was opened with is no longer valid (the key "
                       "file was reloaded)");
        return false;
    }
    bd_metrics_rate_limited_add(c->st->metrics, BD_PROTO_WEBSOCKET);
    refuse_message(c, limited.code, limited.msg);
    return false;
}

/* One complete message: a request to start, or an error reply. */
static void handle_message(conn_t *c, bool binary, const char *data, size_t len)
{
    if (!admit_message(c, binary, data, len)) {
        return;
    }
    bd_infer_args_t a = {.protocol = BD_PROTO_WEBSOCKET,
                         .model = c->model_len ? c->model : NULL,
                         .model_len = c->model_len,
                         .version = c->version,
                         .version_len = c->version_len,
                         .body_names_model = true,
                         .body = data,
                         .len = len,
                         .header_len = len,
                         .user_size = sizeof(ws_call_t),
                         .err_id = &c->st->err_id};
    bd_err_t err = {0};
    if (binary) {
        size_t n = 0;
        if (bd_ws_binary_split((const unsigned char *)data, len, &n, &err) != 0) {
            c->st->err_id.found = false;
            refuse_message(c, err.code, err.msg);
            return;
        }
        a.body = data + 4;
        a.len = len - 4;
        a.header_len = n;
    }
    bd_call_t *call = NULL;
    int rc = bd_infer_start(c->st->inf, &a, on_call_done, &call, &err);
    if (rc != 0) {
        refuse_message(c, rc, err.msg);
        return;
    }
    note_client_id(c, bd_call_id(call));
    if (!bd_call_id(call)) {
        char own[32];
        bd_call_set_id(call, assign_id(c, own, sizeof own)); /* for a request with none */
    }
    ws_call_t *wc = bd_call_user(call);
    wc->conn = c;
    wc->call = call;
    wc->bytes = len;
    bd_list_push_back(&c->calls, &wc->link);
    c->inflight++;
    hold(c, len, 0);
}

/* ---- wslay callbacks (never close or free the conn here) --------------------------------- */

/* Discard what the socket has read (h2o asserts on consuming from an empty buffer). */
static void drop_input(conn_t *c)
{
    if (c->sock->input->size > 0) {
        h2o_buffer_consume(&c->sock->input, c->sock->input->size);
    }
}

/* Close with `code` and read no more: the message being put together is let go. */
static void drop_message(conn_t *c, wslay_event_context_ptr ctx, uint16_t code, const char *why)
{
    queue_close(c, code, why);
    wslay_event_shutdown_read(ctx);
    bd_buf_dispose(&c->msg);
    recount(c, &c->assembling, 0);
}

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    conn_t *c = user;
    (void)flags;
    if (c->broken) {
        drop_input(c); /* after a bad frame */
    }
    h2o_buffer_t *in = c->sock->input; /* after the drop: consuming may swap the buffer */
    if (in->size == 0 || (!c->closing && !may_read(c))) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = in->size < len ? in->size : len;
    const char *bad = NULL;
    size_t ok = bd_ws_frames_scan(&c->frames, (const uint8_t *)in->bytes, n, &bad);
    if (bad && ok > 0) {
        /* The frames before the bad header go first (frames are read in order: their
         * messages are requests like any other); the next call finds the header again. */
        n = ok;
    } else if (bad && c->frames.code == WSLAY_CODE_MESSAGE_TOO_BIG) {
        drop_message(c, ctx, WSLAY_CODE_MESSAGE_TOO_BIG, bad);
        c->broken = true; /* the rest of the input is dropped */
    } else if (bad) {
        queue_close(c, WSLAY_CODE_PROTOCOL_ERROR, bad);
        c->broken = true;
    }
    memcpy(buf, in->bytes, ok);
    h2o_buffer_consume(&c->sock->input, n);
    recount(c, &c->assembling, c->assembling + c->frames.data_bytes); /* until ws_on_msg */
    c->frames.data_bytes = 0;
    if (ok == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    return (ssize_t)ok;
}

static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    conn_t *c = user;
    (void)flags;
    if (c->pending.len >= PENDING_MAX) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    bd_buf_append(&c->pending, data, len);
    if (c->pending.failed) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    c->queued -= len < c->queued ? len : c->queued; /* moved to pending (count_replying) */
    return (ssize_t)len;
}

/* A whole data message (data[0..len)): started, parked, or let go. */
static void on_message(conn_t *c, bool binary, const char *data, size_t len)
{
    /* What assembling has past it is the next message's start, handed to wslay in the same
     * read. */
    recount(c, &c->assembling, c->assembling > len ? c->assembling - len : 0);
    if (c->closing) {
        return;
    }
    if (c->revoked) {
        admit_message(c, binary, data, len); /* 401 to each message until the 1008 goes out */
        return;
    }
    if (!binary && !bd_ws_utf8_valid((const unsigned char *)data, len)) {
        queue_close(c, WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA, "text message is not valid UTF-8");
        return;
    }
    if (busy(c) >= c->st->opts.max_inflight || c->n_parked > 0) {
        /* Taken from the socket before the cap was reached: keep it for later. */
        parked_t *p = malloc(sizeof *p + len);
        if (!p) {
            queue_close(c, WSLAY_CODE_INTERNAL_SERVER_ERROR, "out of memory");
            return;
        }
        p->binary = binary;
        p->len = len;
        if (len > 0) { /* an empty message has no data pointer */
            memcpy(p->data, data, len);
        }
        bd_list_push_back(&c->parked, &p->link);
        c->n_parked++;
        hold(c, p->len, 0);
        return;
    }
    handle_message(c, binary, data, len);
}

/* Frames as wslay reads them (control frames too: it answers ping and close itself). A frame
 * that would take its message past --max-body-bytes never gets here: ws_recv's header walk
 * (bd_ws_frames_scan) refused it with 1009 from its header. */
static void ws_on_frame_start(wslay_event_context_ptr ctx,
                              const struct wslay_event_on_frame_recv_start_arg *arg, void *user)
{
    conn_t *c = user;
    (void)ctx;
    c->frame_data = (arg->opcode & 0x08) == 0;
    c->frame_fin = arg->fin != 0;
    if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME) {
        c->msg_binary = arg->opcode == WSLAY_BINARY_FRAME;
        bd_buf_reset(&c->msg); /* a new message (wslay refuses one inside another) */
    }
}

static void ws_on_frame_chunk(wslay_event_context_ptr ctx,
                              const struct wslay_event_on_frame_recv_chunk_arg *arg, void *user)
{
    conn_t *c = user;
    if (!c->frame_data || arg->data_length == 0 || c->closing) {
        return;
    }
    bd_buf_append(&c->msg, arg->data, arg->data_length); /* within the frame's checked length */
    if (c->msg.failed) {
        drop_message(c, ctx, WSLAY_CODE_INTERNAL_SERVER_ERROR, "out of memory");
    }
}

static void ws_on_frame_end(wslay_event_context_ptr ctx, void *user)
{
    conn_t *c = user;
    (void)ctx;
    if (c->frame_data && c->frame_fin && !c->msg.failed) {
        on_message(c, c->msg_binary, c->msg.data, c->msg.len);
        bd_buf_trim(&c->msg, OUT_KEEP);
    }
}

/* ---- the connection's engine --------------------------------------------------------------- */

static void on_read(h2o_socket_t *sock, const char *err);

/* Start parked messages while the cap has room; all of them once a frame read after them
 * closes the socket (the client's close, 1002, 1007): they came first, so each is run or
 * cancelled, and counted, as docs/API.md says, not let go with the socket. */
static void start_parked(conn_t *c)
{
    size_t cap = c->st->opts.max_inflight;
    /* wslay closes by itself on what it refuses (1002, 1007) and answers a client's close:
     * it reads no more then, before it sends its close and flush sets `closing`. */
    bool ending =
        c->closing || !wslay_event_get_read_enabled(c->ws) || wslay_event_get_close_received(c->ws);
    while (c->sock && c->n_parked > 0 && (busy(c) < cap || ending)) {
        bd_list_t *n = bd_list_first(&c->parked);
        bd_list_unlink(n);
        c->n_parked--;
        parked_t *p = BD_CONTAINER_OF(n, parked_t, link);
        hold(c, 0, p->len); /* handle_message counts it again if it starts */
        handle_message(c, p->binary, p->data, p->len);
        free(p);
    }
}

/* Run what can run: parked messages, then wslay over the bytes the socket has, then the
 * writes; start or stop reading by the cap. */
static void process(conn_t *c)
{
    start_parked(c);
    if (!c->sock) {
        return;
    }
    /* wslay stops after each control frame until its answer is sent: hand the answers on
     * (to `pending`, as long as it has room) and let it go on, a bounded number of rounds. */
    for (int i = 0; i < RECV_ROUNDS && wslay_event_want_read(c->ws) && c->sock->input->size > 0;
         i++) {
        size_t before = c->sock->input->size;
        if (wslay_event_recv(c->ws) != 0) {
            /* Input wslay cannot go on with (a fragmented control frame, a bad length): say
             * so with 1002 and stop reading; the close handshake then ends the connection. */
            queue_close(c, WSLAY_CODE_PROTOCOL_ERROR, "protocol error");
            wslay_event_shutdown_read(c->ws);
            break;
        }
        if (!c->sock || c->sock->input->size == before || c->pending.len >= PENDING_MAX ||
            (wslay_event_want_write(c->ws) && wslay_event_send(c->ws) != 0)) {
            break; /* nothing taken, or no room for the answers: flush below decides */
        }
    }
    start_parked(c);
    if (!c->sock) {
        return;
    }
    count_unread(c); /* before may_read below looks at the total */
    if (c->st->stopping && busy(c) == 0 && c->n_parked == 0) {
        /* The drain: everything this socket asked for was answered, and the replies left
         * wslay's queue (it sends a queued close before queued data frames). */
        queue_close(c, WSLAY_CODE_GOING_AWAY, "the server is shutting down");
    }
    if (c->revoked && busy(c) == 0 && c->n_parked == 0) {
        queue_close(c, WSLAY_CODE_POLICY_VIOLATION, "API key revoked");
    }
    flush(c);
    if (!c->sock) {
        return;
    }
    bool want;
    if (wslay_event_want_read(c->ws)) {
        want = c->closing || (may_read(c) && c->sock->input->size < UNREAD_MAX);
    } else {
        /* No more frames wanted: after our close went out, read only to see the client
         * hang up, dropping what it still sends. */
        drop_input(c);
        want = c->shut_wr;
    }
    count_unread(c); /* drop_input may have let go of some */
    if (want && !c->reading) {
        h2o_socket_read_start(c->sock, on_read);
    } else if (!want && c->reading) {
        h2o_socket_read_stop(c->sock);
    }
    c->reading = want;
    bool watch = !want && !c->closing && (c->inflight > 0 || c->n_parked > 0);
    if (watch != h2o_timeout_is_linked(&c->watch)) {
        if (watch) {
            h2o_timeout_link(c->st->loop, &c->st->watch_timeout, &c->watch);
        } else {
            h2o_timeout_unlink(&c->watch);
        }
    }
    /* The idle time starts afresh once the last reply went out, not from the last frame. */
    bool work = working(c);
    if (!c->closing && !work && (c->worked || !h2o_timeout_is_linked(&c->timer))) {
        arm_timer(c, &c->st->idle_timeout, on_idle);
    }
    c->worked = work;
}

static void on_read(h2o_socket_t *sock, const char *err)
{
    conn_t *c = sock->data;
    if (err) {
        close_socket(c); /* the connection dropped */
    } else {
        if (!c->closing) {
            arm_timer(c, &c->st->idle_timeout, on_idle); /* a frame or part of one came */
        }
        process(c);
    }
    release_if_done(c);
}

/* A socket not read: the peer's FIN (POLLRDHUP, also behind unread bytes and under TLS) or a
 * reset means the client left; anything else, look again in WATCH_MS. */
static void on_watch(h2o_timeout_entry_t *entry)
{
    conn_t *c = H2O_STRUCT_FROM_MEMBER(conn_t, watch, entry);
    struct pollfd p = {.fd = h2o_socket_get_fd(c->sock), .events = POLLRDHUP};
    if (poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
        close_socket(c);
    } else {
        h2o_timeout_link(c->st->loop, &c->st->watch_timeout, &c->watch);
    }
    release_if_done(c);
}

static void on_idle(h2o_timeout_entry_t *entry)
{
    conn_t *c = H2O_STRUCT_FROM_MEMBER(conn_t, timer, entry);
    if (working(c)) {
        return; /* process re-arms it when the last reply went out */
    }
    queue_close(c, WSLAY_CODE_NORMAL_CLOSURE, "idle timeout");
    process(c);
    release_if_done(c);
}

/* ---- handshake ---------------------------------------------------------------------------- */

static void on_upgraded(void *data, h2o_socket_t *sock, size_t reqsize)
{
    conn_t *c = data;
    bd_stream_t *st = c->st;
    struct wslay_event_callbacks cbs = {ws_recv,           ws_send,         NULL, ws_on_frame_start,
                                        ws_on_frame_chunk, ws_on_frame_end, NULL};
    if (!sock || wslay_event_context_server_init(&c->ws, &cbs, c) != 0) {
        if (sock) {
            h2o_socket_close(sock);
        }
        free(c);
        return;
    }
    if (reqsize > 0) {
        h2o_buffer_consume(&sock->input, reqsize);
    }
    sock->data = c;
    c->sock = sock;
    /* h2o reads until the kernel has nothing more: a fixed receive buffer (no autotuning of
     * it to megabytes) bounds what one read takes in past UNREAD_MAX. */
    int rcvbuf = RCVBUF_BYTES;
    setsockopt(h2o_socket_get_fd(sock), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    wslay_event_config_set_no_buffering(c->ws, 1); /* data messages: ws_on_frame_* */
    wslay_event_config_set_max_recv_msg_length(c->ws, st->opts.max_message_bytes); /* a frame's */
    c->frames.max_message = st->opts.max_message_bytes; /* a message's, from its headers */
    bd_list_push_back(&st->conns, &c->link);
    st->n_conns++;
    bd_metrics_websocket_connections_add(st->metrics, 1);
    if (st->stopping) {
        queue_close(c, WSLAY_CODE_GOING_AWAY, "the server is shutting down");
    }
    process(c);
    release_if_done(c);
}

/* Sec-WebSocket-Accept: base64(SHA-1(key + the RFC 6455 GUID)), 28 characters. (libh2o
 * declares a helper for this but does not export it.) */
static void accept_key(char dst[32], const char *client_key)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char buf[128];
    /* h2o's key points into the header value, unterminated; it checked it is 24 bytes. */
    int n = snprintf(buf, sizeof buf, "%.24s%s", client_key, guid);
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)buf, (size_t)n, digest);
    EVP_EncodeBlock((unsigned char *)dst, digest, SHA_DIGEST_LENGTH);
}

static void reply_http_error(bd_stream_t *st, h2o_req_t *req, int status, const char *msg)
{
    bd_buf_t *b = &st->out;
    bd_buf_reset(b);
    bd_buf_json_error(b, msg);
    req->res.status = status;
    req->res.reason = status == 400   ? "Bad Request"
                      : status == 426 ? "Upgrade Required"
                      : status == 500 ? "Internal Server Error"
                                      : "Service Unavailable";
    req->res.content_length = b->len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/json"));
    h2o_send_inline(req, b->data, b->len);
}

/* RFC 6455 4.2.1: the key is base64 of 16 bytes: 22 characters of the alphabet, then "==".
 * (h2o checks only that it has 24.) */
static bool key_ok(const char *key)
{
    for (int i = 0; i < 22; i++) {
        if (!isalnum((unsigned char)key[i]) && key[i] != '+' && key[i] != '/') {
            return false;
        }
    }
    return key[22] == '=' && key[23] == '=';
}

bool bd_stream_accept(bd_stream_t *st, h2o_req_t *req, const char *model, size_t model_len,
                      const char *version, size_t version_len, const bd_gate_who_t *who)
{
    const char *key = NULL;
    if (st->stopping) {
        reply_http_error(st, req, 503, "the server is shutting down");
        return false;
    }
    ssize_t first_key = h2o_find_header_by_str(&req->headers, H2O_STRLIT("sec-websocket-key"), -1);
    ssize_t vi = h2o_find_header_by_str(&req->headers, H2O_STRLIT("sec-websocket-version"), -1);
    bool twice =
        (first_key >= 0 &&
         h2o_find_header_by_str(&req->headers, H2O_STRLIT("sec-websocket-key"), first_key) >= 0) ||
        (vi >= 0 &&
         h2o_find_header_by_str(&req->headers, H2O_STRLIT("sec-websocket-version"), vi) >= 0);
    /* RFC 6455 4.1 and 11.3: over HTTP/1.1 exactly, with one key and one version. */
    if (req->version != 0x101 || twice || h2o_is_websocket_handshake(req, &key) != 0 || !key ||
        !key_ok(key)) {
        reply_http_error(st, req, 400,
                         "this endpoint is a WebSocket: expected GET with 'Upgrade: websocket', "
                         "'Connection: Upgrade', one 'Sec-WebSocket-Key' and "
                         "'Sec-WebSocket-Version: 13' over HTTP/1.1");
        return false;
    }
    if (vi < 0 || !h2o_memis(req->headers.entries[vi].value.base,
                             req->headers.entries[vi].value.len, H2O_STRLIT("13"))) {
        /* RFC 6455 4.4: name the version we speak; RFC 9110 15.5.22 and 7.8: a 426 names the
         * protocol to upgrade to, and Upgrade goes with the upgrade connection option. */
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("sec-websocket-version"), 0,
                              NULL, H2O_STRLIT("13"));
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_UPGRADE, NULL,
                       H2O_STRLIT("websocket"));
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONNECTION, NULL,
                       H2O_STRLIT("Upgrade"));
        reply_http_error(st, req, 426,
                         "this server speaks WebSocket version 13 only "
                         "(Sec-WebSocket-Version: 13)");
        return false;
    }
    conn_t *c = calloc(1, sizeof *c);
    if (!c || model_len >= sizeof c->model || version_len >= sizeof c->version) {
        bool nomem = !c;
        free(c);
        reply_http_error(st, req, nomem ? 500 : 400,
                         nomem ? "out of memory" : "the model name or version is too long");
        return false;
    }
    c->st = st;
    if (who) {
        c->who = *who;
    }
    memcpy(c->model, model ? model : "", model_len);
    c->model_len = model ? model_len : 0;
    memcpy(c->version, version ? version : "", version_len);
    c->version_len = version ? version_len : 0;
    bd_list_init(&c->link);
    bd_list_init(&c->calls);
    bd_list_init(&c->parked);
    bd_buf_init(&c->pending);
    bd_buf_init(&c->writing);
    c->watch.cb = on_watch;
    char accept[32];
    accept_key(accept, key);
    req->res.status = 101;
    req->res.reason = "Switching Protocols";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_UPGRADE, NULL, H2O_STRLIT("websocket"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("sec-websocket-accept"), 0,
                          NULL, accept, strlen(accept));
    h2o_http1_upgrade(req, NULL, 0, on_upgraded, c);
    return true;
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

bd_stream_t *bd_stream_new(struct st_h2o_evloop_t *loop, bd_infer_t *inf, bd_metrics_t *metrics,
                           const bd_stream_opts_t *opts)
{
    bd_stream_t *st = calloc(1, sizeof *st);
    if (!st) {
        return NULL;
    }
    st->loop = loop;
    st->inf = inf;
    st->metrics = metrics;
    st->opts = *opts;
    if (st->opts.max_inflight < 1) {
        st->opts.max_inflight = 1;
    }
    bd_list_init(&st->conns);
    bd_buf_init(&st->out);
    bd_buf_init(&st->err_id.text);
    uint64_t idle_ms = st->opts.idle_timeout_us / 1000;
    h2o_timeout_init(loop, &st->idle_timeout, idle_ms ? idle_ms : 1);
    h2o_timeout_init(loop, &st->close_timeout, CLOSE_WAIT_MS);
    h2o_timeout_init(loop, &st->watch_timeout, WATCH_MS);
    return st;
}

void bd_stream_shutdown(bd_stream_t *st)
{
    st->stopping = true;
    for (bd_list_t *n = st->conns.next; n != &st->conns;) {
        conn_t *c = BD_CONTAINER_OF(n, conn_t, link);
        n = n->next; /* process may close c's socket and unlink it */
        process(c);  /* closes with 1001 once nothing is in flight */
        release_if_done(c);
    }
}

size_t bd_stream_connections(const bd_stream_t *st)
{
    return st->n_conns;
}

void bd_stream_free(bd_stream_t *st)
{
    if (!st) {
        return;
    }
    while (!bd_list_empty(&st->conns)) {
        conn_t *c = BD_CONTAINER_OF(bd_list_first(&st->conns), conn_t, link);
        close_socket(c);
        release_if_done(c); /* every call came back before the server frees the stream */
    }
    h2o_timeout_dispose(st->loop, &st->idle_timeout);
    h2o_timeout_dispose(st->loop, &st->close_timeout);
    h2o_timeout_dispose(st->loop, &st->watch_timeout);
    bd_buf_dispose(&st->out);
    bd_buf_dispose(&st->err_id.text);
    free(st);
}
