/* cli: the batchd command line. main.c dispatches to one function per subcommand; every
 * subcommand's flags are one option table parsed by bd_cli_parse (opts.c). */
#ifndef BD_CLI_H
#define BD_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/core.h"

int bd_cli_serve(int argc, char **argv);
/* Before serve: re-execute the process once with glibc's malloc asking for transparent huge
 * pages and keeping freed memory for reuse (GLIBC_TUNABLES=glibc.malloc.hugetlb=1:...), unless
 * GLIBC_TUNABLES or LD_PRELOAD is set or the kernel has them off. Returns only when it did not
 * re-execute; the process it re-executed keeps the name it was started as. See serve.c. */
void bd_cli_hugepages_reexec(char **argv);
int bd_cli_version(int argc, char **argv);
int bd_cli_bench(int argc, char **argv);
/* infer.c: `batchd infer` (one request, the reply printed readably) and `batchd inspect`. */
int bd_cli_infer(int argc, char **argv);
int bd_cli_inspect(int argc, char **argv);

/* ---- option tables --------------------------------------------------------------------- */

/* One row per flag drives parsing, validation and --help, so they cannot drift apart. A
 * command describes its options as a struct and a table of rows pointing into it with
 * offsetof; bd_cli_parse fills the struct. Precedence: flag > environment > default (each
 * value is applied in that order and validated when applied, so a malformed environment
 * variable is an error even when a flag overrides it). */
typedef enum {
    BD_CLI_STR,  /* const char *: borrows argv, the environment or the table */
    BD_CLI_INT,  /* int64_t: a decimal integer from min to max */
    BD_CLI_NUM,  /* double: a finite number from min to max */
    BD_CLI_DUR,  /* uint64_t microseconds: "10s", "500ms", "100us", "2m" or "1.5" (seconds);
                  * from min to max seconds (min 0 where 0 has a meaning) */
    BD_CLI_BOOL, /* bool: a flag without a value; present means true. From the environment:
                  * 1/true/yes or 0/false/no */
    BD_CLI_LIST, /* bd_cli_list_t: repeatable; each occurrence appends one string */
} bd_cli_type_t;

#define BD_CLI_LIST_MAX 32

typedef struct {
    const char *v[BD_CLI_LIST_MAX]; /* borrowed like BD_CLI_STR */
    size_t n;
} bd_cli_list_t;

typedef struct {
    const char *flag; /* "--http-port"; also matches "--http-port=VALUE" (not for BOOL) */
    bd_cli_type_t type;
    size_t offset;    /* of the field in the command's options struct */
    const char *def;  /* default, as text parsed like a value; NULL: none (field untouched) */
    double min, max;  /* INT, NUM: bounds; DUR: bounds in seconds. Exact up to 2^53 */
    const char *env;  /* environment variable ("BATCHD_HTTP_PORT"), or NULL; empty is unset */
    const char *help; /* one line for --help */
} bd_cli_opt_t;

/* The flags every client command (bench, infer) takes to name a model on a server, for an
 * options struct `type` with const char * fields url, model, version, api_key and cacert. */
/* clang-format off */
#define BD_CLI_SERVER_OPTS(type)                                                                   \
    {"--url", BD_CLI_STR, offsetof(type, url), NULL, 0, 0, NULL,                                   \
     "server, http[s]://HOST:PORT[/prefix]; required"},                                            \
    {"--model", BD_CLI_STR, offsetof(type, model), NULL, 0, 0, NULL, "model name; required"},      \
    {"--model-version", BD_CLI_STR, offsetof(type, version), NULL, 0, 0, NULL,                     \
     "model version (default: the server's)"},                                                     \
    BD_CLI_API_KEY_OPT(type), BD_CLI_CACERT_OPT(type)
/* An https:// server: the CAs its certificate is checked against. */
#define BD_CLI_CACERT_OPT(type)                                                                    \
    {"--cacert", BD_CLI_STR, offsetof(type, cacert), NULL, 0, 0, NULL,                             \
     "with an https:// URL: PEM file of the CA certificates to trust (a self-signed server's "    \
     "own certificate will do); default: the system's"}
/* A server started with --api-keys: the key each request sends (Authorization: Bearer). The
 * environment variable keeps it out of the process list. */
#define BD_CLI_API_KEY_OPT(type)                                                                   \
    {"--api-key", BD_CLI_STR, offsetof(type, api_key), NULL, 0, 0, "BATCHD_API_KEY",               \
     "API key to send as 'Authorization: Bearer <key>' (for a server with --api-keys)"}
/* clang-format on */

typedef struct {
    const char *usage; /* the usage line(s) --help prints before the flags, newline-ended */
    const bd_cli_opt_t *opts;
    size_t n_opts;
} bd_cli_cmd_t;

enum { BD_CLI_HELP = 1 }; /* bd_cli_parse: --help or -h was given and help was printed */

/* Fill `out` (the options struct the table's offsets point into; the caller zeroes it) from
 * the defaults, then the environment, then argv[1..argc-1] in order (a later flag wins):
 * `--flag value` or `--flag=value`. Returns 0; BD_CLI_HELP after printing the help to `help`
 * when --help or -h comes before any bad argument; or BD_EINVAL with one sentence in err
 * naming the flag or environment variable, e.g. "--http-port must be an integer from 0 to
 * 65535, got 'abc'", "unknown flag '--x' (see --help)", "unexpected argument 'x': flags
 * start with '--' (see --help)", "--host needs a value". Strings in
 * `out` borrow argv, the environment and the table. Main thread (reads the environment). */
int bd_cli_parse(const bd_cli_cmd_t *cmd, int argc, char **argv, void *out, FILE *help,
                 bd_err_t *err);

/* Whether argv[1..argc-1] gives `flag` ("--flag" or "--flag=value"; a flag's value is not
 * taken for a flag), for options that apply only beside others. */
bool bd_cli_given(int argc, char **argv, const char *flag);

/* 1/true/yes or 0/false/no into *out; -1 for anything else. */
int bd_cli_parse_bool(const char *s, bool *out);

/* The usage line, then one entry per row: flag and help, then "(env X, default Y)" on a
 * second line when the row has an environment variable, else " (default Y)" after the help. */
void bd_cli_usage(const bd_cli_cmd_t *cmd, FILE *f);

/* Whether `key` (NULL: none) can go in a header: 1 to 256 visible ASCII characters. Prints
 * why not as "batchd CMD: ..." and returns false. */
bool bd_cli_api_key_ok(const char *cmd, const char *key);
/* --model: NULL (not given), or a name; an empty one prints "batchd CMD: --model needs a
 * name; it was given an empty one" and returns false. */
bool bd_cli_model_ok(const char *cmd, const char *model);
/* --cacert: NULL, or a file that can be read; otherwise prints "batchd CMD: cannot read
 * --cacert 'PATH': why" and returns false (a bad flag: exit 2 before anything is sent). */
bool bd_cli_cacert_ok(const char *cmd, const char *path);
/* bd_cli_cacert_ok, and the file holds a CA certificate OpenSSL loads (infer.c). */
bool bd_cli_cacert_loads(const char *cmd, const char *path);

#endif
