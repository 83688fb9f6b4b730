/* tls.c: the TLS context of the HTTP front end (bd_http_tls_new, see http.h). It is built once
 * at start from the operator's PEM files; h2o then runs every connection's handshake and record
 * layer with it (OpenSSL through h2o's socket layer, on the loop thread), so HTTPS and WSS need
 * nothing else from the rest of the server.
 *
 * Choices: TLS 1.2 is the oldest version offered (1.0 and 1.1 are deprecated, RFC 8996); TLS
 * 1.2 gets only ECDHE key exchange with AEAD ciphers (forward secrecy, no CBC), TLS 1.3 its
 * OpenSSL defaults. Renegotiation is refused (a client could otherwise make the server redo
 * the expensive half of a handshake at will; h2o 2.2.5 cannot do it anyway). ALPN offers only
 * "http/1.1": HTTP/2 stays off (h2o 2.2.5 lacks the rapid-reset fix), and a client that offers
 * only "h2" gets no ALPN answer and speaks HTTP/1.1. OpenSSL's read and write buffers are
 * released while a connection is idle (SSL_MODE_RELEASE_BUFFERS), which matters with many
 * kept-alive camera connections. An encrypted key is refused rather than prompting for a
 * password on a terminal nobody watches.
 *
 * Threads: whoever calls bd_http_tls_new (serve's main thread, before any model loads: it owns
 * the context and lends it to the front end); the context is read-only afterwards. */
#include "http/http.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <h2o.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

/* Mozilla's "intermediate" TLS 1.2 list less the DHE suites (they need DH parameters and add
 * nothing for clients that have ECDHE). */
#define TLS12_CIPHERS                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* The first reason OpenSSL gave for its failure (the root cause: "no start line", not the
 * "PEM lib" wrapped around it), and the queue cleared. */
static const char *ssl_reason(void)
{
    unsigned long e = ERR_peek_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r ? r : "unknown reason";
}

/* No password for encrypted keys: loading one fails instead of prompting. */
static int no_password(char *buf, int size, int rwflag, void *user)
{
    (void)buf, (void)size, (void)rwflag, (void)user;
    return 0;
}

/* Whether `path` can be opened for reading (fifos and /dev/fd/N included), for a message that
 * says why not before OpenSSL's less direct one. */
static int check_readable(const char *path, const char *what, const char *flag, bd_err_t *err)
{
    FILE *f = fopen(path, "r");
    struct stat st;
    if (!f) {
        return bd_err_set(err, BD_EINVAL, "cannot read the TLS %s file '%s' (%s): %s", what, path,
                          flag, strerror(errno));
    }
    bool dir = fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode);
    fclose(f);
    if (dir) {
        return bd_err_set(err, BD_EINVAL, "the TLS %s '%s' (%s) is a folder, not a PEM file", what,
                          path, flag);
    }
    return 0;
}

/* What a PEM file OpenSSL refused holds, read again to say why (judged from its first 4 KiB);
 * PEM_OTHER when that says nothing more, or it is no regular file (OpenSSL has read a FIFO's
 * bytes). An encrypted key is PKCS#8 "ENCRYPTED PRIVATE KEY" or a traditional key with
 * "Proc-Type: 4,ENCRYPTED". */
enum { PEM_OTHER, PEM_EMPTY, PEM_NONE, PEM_KEY, PEM_CERT, PEM_ENCRYPTED };
static const char *const pem_said[] = {"",
                                       "is empty",
                                       "holds no PEM block",
                                       "holds a private key",
                                       "holds a certificate",
                                       "holds an encrypted key"};
static int pem_holds(const char *path)
{
    char buf[4096];
    struct stat st;
    FILE *f = fopen(path, "r");
    if (!f || fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        if (f) {
            fclose(f);
        }
        return PEM_OTHER;
    }
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    bool key = strstr(buf, "PRIVATE KEY-----") != NULL;
    bool cert = strstr(buf, "-----BEGIN CERTIFICATE") != NULL;
    return st.st_size == 0               ? PEM_EMPTY
           : strstr(buf, "ENCRYPTED")    ? PEM_ENCRYPTED
           : !strstr(buf, "-----BEGIN ") ? PEM_NONE
           : key && !cert                ? PEM_KEY
           : cert && !key                ? PEM_CERT
                                         : PEM_OTHER;
}

/* Warn when the certificate is outside its validity period: clients that check it (every
 * browser and library by default) will refuse the server, but serving is the operator's call. */
static void check_validity(SSL_CTX *ctx, const char *cert_file)
{
    X509 *x = SSL_CTX_get0_certificate(ctx);
    if (!x) {
        return;
    }
    struct tm tm;
    char until[32] = "unknown";
    char from[32] = "unknown";
    if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1) {
        strftime(until, sizeof until, "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
    if (ASN1_TIME_to_tm(X509_get0_notBefore(x), &tm) == 1) {
        strftime(from, sizeof from, "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
    if (X509_cmp_current_time(X509_get0_notAfter(x)) < 0) {
        BD_WARN("http",
                "tls cert=%s not_after=%s: the certificate has expired; clients will "
                "refuse it",
                cert_file, until);
    } else if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0) {
        BD_WARN("http",
                "tls cert=%s not_after=%s not_before=%s: the certificate is not valid "
                "yet; clients will refuse it",
                cert_file, until, from);
    } else {
        BD_INFO("http", "tls cert=%s not_after=%s", cert_file, until);
    }
}

SSL_CTX *bd_http_tls_new(const char *cert_file, const char *key_file, const char *cert_name,
                         const char *key_name, bd_err_t *err)
{
    static const h2o_iovec_t alpn[] = {{H2O_STRLIT("http/1.1")}, {NULL, 0}};
    if (check_readable(cert_file, "certificate", cert_name, err) != 0 ||
        check_readable(key_file, "key", key_name, err) != 0) {
        return NULL;
    }
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        bd_err_set(err, BD_ENOMEM, "cannot create a TLS context: %s", ssl_reason());
        return NULL;
    }
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1) {
        bd_err_set(err, BD_EIO, "cannot configure TLS: %s", ssl_reason());
        goto fail;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_default_passwd_cb(ctx, no_password);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        int holds = pem_holds(cert_file);
        const char *why = ssl_reason();
        if (holds != PEM_OTHER && holds != PEM_CERT) {
            bd_err_set(err, BD_EINVAL,
                       "the TLS certificate '%s' (%s) %s; expected a PEM certificate", cert_file,
                       cert_name, pem_said[holds]);
        } else {
            bd_err_set(
                err, BD_EINVAL,
                "the TLS certificate '%s' (%s) is not a PEM certificate OpenSSL can use (%s)",
                cert_file, cert_name, why);
        }
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        unsigned long e = ERR_peek_last_error();
        int holds = pem_holds(key_file);
        if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH) {
            ERR_clear_error();
            bd_err_set(err, BD_EINVAL,
                       "the TLS key '%s' (%s) does not belong to the certificate '%s' (%s)",
                       key_file, key_name, cert_file, cert_name);
        } else if (holds == PEM_ENCRYPTED) {
            ERR_clear_error();
            bd_err_set(err, BD_EINVAL,
                       "the TLS key '%s' (%s) is encrypted, and batchd needs it unencrypted "
                       "(openssl pkey -in KEY -out PLAIN_KEY)",
                       key_file, key_name);
        } else if (holds != PEM_OTHER && holds != PEM_KEY) {
            ERR_clear_error();
            bd_err_set(err, BD_EINVAL, "the TLS key '%s' (%s) %s; expected a PEM private key",
                       key_file, key_name, pem_said[holds]);
        } else {
            bd_err_set(err, BD_EINVAL,
                       "the TLS key '%s' (%s) is not a PEM private key OpenSSL can use (%s)",
                       key_file, key_name, ssl_reason());
        }
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        bd_err_set(err, BD_EINVAL,
                   "the TLS key '%s' (%s) does not belong to the certificate '%s' (%s)", key_file,
                   key_name, cert_file, cert_name);
        goto fail;
    }
    h2o_ssl_register_alpn_protocols(ctx, alpn);
    check_validity(ctx, cert_file);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

void bd_http_tls_free(SSL_CTX *ctx)
{
    SSL_CTX_free(ctx);
}
