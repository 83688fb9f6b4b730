/* tls.c: the client side of TLS for an https:// target (batchd infer, inspect and bench):
 * a context that checks the server's certificate (TLS 1.2 or newer, against --cacert or the
 * system's CAs), a session per connection that checks the certificate names the URL's host or
 * address, a whole handshake on a blocking or non-blocking socket with the one sentence that
 * says why it failed (bd_lg_tls_open: infer, inspect and bench's metadata GET; the load loop
 * drives its own), one send or recv that goes through TLS or not (bd_lg_io_*), and the poll
 * wait they share with the metadata GET.
 *
 * Threads: the calling thread's; a context and its sessions belong to one thread. */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "loadgen/loadgen_internal.h"

/* OpenSSL's reason for the last failure, or what errno says (a timeout, a reset). */
static const char *tls_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r ? r : errno == EAGAIN ? "timed out" : errno ? strerror(errno) : "the server closed";
}

SSL_CTX *bd_lg_tls_ctx(const bd_lg_target_t *t, bd_err_t *err)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        bd_err_set(err, BD_EIO, "cannot set up TLS: %s", tls_reason());
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* Non-blocking writes may be partial and resumed from a moved buffer position. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (t->cacert && access(t->cacert, R_OK) != 0) {
        bd_err_set(err, BD_EINVAL, "cannot read --cacert '%s': %s", t->cacert, strerror(errno));
    } else if (t->cacert ? SSL_CTX_load_verify_locations(ctx, t->cacert, NULL) != 1
                         : SSL_CTX_set_default_verify_paths(ctx) != 1) {
        bd_err_set(err, BD_EINVAL, "no CA certificate could be read from %s: %s",
                   t->cacert ? t->cacert : "the system's store", tls_reason());
    } else {
        return ctx;
    }
    SSL_CTX_free(ctx);
    return NULL;
}

int bd_lg_tls_check_cacert(const char *path, bd_err_t *err)
{
    bd_lg_target_t *t = calloc(1, sizeof *t);
    if (!t) {
        return bd_err_set(err, BD_ENOMEM, "out of memory");
    }
    t->cacert = path;
    SSL_CTX *ctx = bd_lg_tls_ctx(t, err);
    int rc = ctx ? 0 : BD_EINVAL;
    free(t);
    SSL_CTX_free(ctx);
    return rc;
}

SSL *bd_lg_tls_ssl(SSL_CTX *ctx, const bd_lg_target_t *t, int fd, bd_err_t *err)
{
    ERR_clear_error();
    SSL *ssl = SSL_new(ctx);
    unsigned char addr[16];
    bool is_ip = inet_pton(AF_INET, t->host, addr) == 1 || inet_pton(AF_INET6, t->host, addr) == 1;
    if (!ssl || SSL_set_fd(ssl, fd) != 1 ||
        (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), t->host) != 1
               : SSL_set_tlsext_host_name(ssl, t->host) != 1 || SSL_set1_host(ssl, t->host) != 1)) {
        bd_err_set(err, BD_EIO, "cannot set up TLS for host '%s': %s", t->host, tls_reason());
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_connect_state(ssl);
    return ssl;
}

/* After SSL_connect failed: the sentence that says why (an untrusted certificate, one for
 * another name, or OpenSSL's reason). Returns BD_EIO. */
static int tls_failed(SSL *ssl, const bd_lg_target_t *t, bd_err_t *err)
{
    long v = SSL_get_verify_result(ssl);
    if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH) {
        return bd_err_set(err, BD_EIO,
                          "the certificate of %s:%s is for another name (%s); use a URL with a "
                          "name or address the certificate lists",
                          t->host, t->port, X509_verify_cert_error_string(v));
    }
    if (v == X509_V_ERR_CERT_HAS_EXPIRED || v == X509_V_ERR_CERT_NOT_YET_VALID) {
        return bd_err_set(err, BD_EIO,
                          "the certificate of %s:%s is not accepted: %s; the server needs a "
                          "certificate valid now (check its dates and this machine's clock)",
                          t->host, t->port, X509_verify_cert_error_string(v));
    }
    if (v != X509_V_OK) {
        return bd_err_set(err, BD_EIO,
                          "the certificate of %s:%s is not trusted: %s; give the CA that signed "
                          "it (or the certificate itself) with --cacert FILE",
                          t->host, t->port, X509_verify_cert_error_string(v));
    }
    return bd_err_set(err, BD_EIO, "TLS handshake with %s:%s failed: %s", t->host, t->port,
                      tls_reason());
}

int bd_lg_wait_fd(int fd, short events, uint64_t deadline_us)
{
    for (;;) {
        uint64_t now = bd_now_us();
        if (now >= deadline_us) {
            return BD_EIO;
        }
        struct pollfd pfd = {.fd = fd, .events = events};
        int ms = (int)((deadline_us - now + 999) / 1000);
        int rc = poll(&pfd, 1, ms);
        if (rc > 0) {
            return 0;
        }
        if (rc < 0 && errno != EINTR) {
            return BD_EIO;
        }
    }
}

int bd_lg_tls_open(const bd_lg_target_t *t, int fd, uint64_t deadline_us, SSL_CTX **ctx, SSL **ssl,
                   bd_err_t *err)
{
    if (!(*ctx = bd_lg_tls_ctx(t, err)) || !(*ssl = bd_lg_tls_ssl(*ctx, t, fd, err))) {
        return err ? err->code : BD_EIO;
    }
    int r;
    while ((r = SSL_connect(*ssl)) != 1) {
        int e = SSL_get_error(*ssl, r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            return tls_failed(*ssl, t, err);
        }
        if (bd_lg_wait_fd(fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline_us) != 0) {
            return bd_err_set(err, BD_EIO, "TLS handshake with %s:%s timed out", t->host, t->port);
        }
    }
    return 0;
}

/* After an SSL_read or SSL_write that moved nothing: -1 with *wait for what it waits on, 0 for
 * the end of the stream (reads), or -1 with errno for an error. */
static ssize_t tls_io_end(SSL *ssl, int k, short *wait)
{
    int e = SSL_get_error(ssl, k);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        *wait = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        return -1;
    }
    if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0)) {
        return 0; /* close_notify, or a close without one */
    }
    if (errno == 0 || errno == EAGAIN) {
        errno = EPROTO;
    }
    return -1;
}

ssize_t bd_lg_io_send(int fd, SSL *ssl, const char *p, size_t n, short *wait)
{
    *wait = 0;
    if (!ssl) {
        ssize_t k;
        while ((k = send(fd, p, n, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
        }
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            *wait = POLLOUT;
        }
        return k;
    }
    errno = 0;
    ERR_clear_error();
    int k = SSL_write(ssl, p, n > INT_MAX ? INT_MAX : (int)n);
    if (k > 0) {
        return k;
    }
    ssize_t r = tls_io_end(ssl, k, wait);
    if (r == 0) {
        errno = EPIPE; /* the peer closed: nothing more can be written */
        r = -1;
    }
    return r;
}

ssize_t bd_lg_io_recv(int fd, SSL *ssl, char *p, size_t n, short *wait)
{
    *wait = 0;
    if (!ssl) {
        ssize_t k;
        while ((k = recv(fd, p, n, 0)) < 0 && errno == EINTR) {
        }
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            *wait = POLLIN;
        }
        return k;
    }
    errno = 0;
    ERR_clear_error();
    int k = SSL_read(ssl, p, n > INT_MAX ? INT_MAX : (int)n);
    return k > 0 ? k : tls_io_end(ssl, k, wait);
}
