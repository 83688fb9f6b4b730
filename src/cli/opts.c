/* opts.c: the option-table engine every subcommand's flags go through (see cli.h). A table
 * row names a flag, its type, the offset of its field, its default as text, its bounds, its
 * environment variable and its help line; from that one row come the default, the parse, the
 * bounds check with its error sentence, and the --help entry.
 *
 * Values are applied in precedence order, lowest first: every default, then every set
 * environment variable, then argv from left to right, each parsed and checked as it is
 * applied, so the last one standing wins and a malformed one is reported even when a
 * later one would have replaced it. Nothing is allocated: strings borrow argv, the
 * environment and the table. Main thread only (getenv). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"

/* "10s", "250ms", "100us", "2m", "1.5" (seconds) -> seconds. */
static int parse_duration(const char *s, double *seconds)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !isfinite(v) || v < 0) {
        return -1;
    }
    double mul;
    if (strcmp(end, "") == 0 || strcmp(end, "s") == 0) {
        mul = 1;
    } else if (strcmp(end, "ms") == 0) {
        mul = 1e-3;
    } else if (strcmp(end, "us") == 0) {
        mul = 1e-6;
    } else if (strcmp(end, "m") == 0) {
        mul = 60;
    } else {
        return -1;
    }
    *seconds = v * mul;
    return 0;
}

int bd_cli_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes"};
    static const char *const no[] = {"0", "false", "no"};
    for (size_t i = 0; i < 3; i++) {
        if (strcmp(s, yes[i]) == 0 || strcmp(s, no[i]) == 0) {
            *out = strcmp(s, yes[i]) == 0;
            return 0;
        }
    }
    return -1;
}

/* Parse `val` into o's field. `name` is what the error names: the flag, or the environment
 * variable the value came from. */
static int apply(const bd_cli_opt_t *o, const char *name, const char *val, void *out, bd_err_t *err)
{
    char *field = (char *)out + o->offset;
    switch (o->type) {
    case BD_CLI_STR:
        *(const char **)field = val;
        return 0;
    case BD_CLI_LIST: {
        bd_cli_list_t *l = (bd_cli_list_t *)(void *)field;
        if (l->n >= BD_CLI_LIST_MAX) {
            return bd_err_set(err, BD_EINVAL, "%s may be given at most %d times", name,
                              BD_CLI_LIST_MAX);
        }
        l->v[l->n++] = val;
        return 0;
    }
    case BD_CLI_INT: {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(val, &end, 10);
        if (errno || !*val || *end || (double)v < o->min || (double)v > o->max) {
            return bd_err_set(err, BD_EINVAL, "%s must be an integer from %lld to %lld, got '%s'",
                              name, (long long)o->min, (long long)o->max, val);
        }
        *(int64_t *)(void *)field = v;
        return 0;
    }
    case BD_CLI_NUM: {
        char *end = NULL;
        errno = 0;
        double v = strtod(val, &end);
        if (errno || !*val || *end || !isfinite(v) || v < o->min || v > o->max) {
            return bd_err_set(err, BD_EINVAL, "%s must be a number from %g to %g, got '%s'", name,
                              o->min, o->max, val);
        }
        *(double *)(void *)field = v;
        return 0;
    }
    case BD_CLI_DUR: {
        double v = 0;
        if (parse_duration(val, &v) != 0 || v < o->min || v > o->max) {
            return bd_err_set(err, BD_EINVAL,
                              "%s must be a duration like 10s, 500ms or 2m from %gs to %gs, "
                              "got '%s'",
                              name, o->min, o->max, val);
        }
        *(uint64_t *)(void *)field = (uint64_t)llround(v * 1e6);
        return 0;
    }
    case BD_CLI_BOOL:
        if (bd_cli_parse_bool(val, (bool *)(void *)field) != 0) {
            return bd_err_set(err, BD_EINVAL, "%s must be 1, true, yes, 0, false or no, got '%s'",
                              name, val);
        }
        return 0;
    }
    return bd_err_set(err, BD_EINVAL, "%s has an unknown option type", name);
}

/* The row `arg` names ("--flag" or "--flag=value"), with *val set to the text after '=' or
 * NULL; NULL when no row matches. A BOOL flag alone means true; "--flag=false" turns off
 * what its environment variable turned on. */
static const bd_cli_opt_t *find(const bd_cli_cmd_t *cmd, const char *arg, const char **val)
{
    for (size_t i = 0; i < cmd->n_opts; i++) {
        const bd_cli_opt_t *o = &cmd->opts[i];
        size_t n = strlen(o->flag);
        if (strncmp(arg, o->flag, n) != 0) {
            continue;
        }
        if (arg[n] == '\0') {
            *val = NULL;
            return o;
        }
        if (arg[n] == '=') {
            *val = arg + n + 1;
            return o;
        }
    }
    return NULL;
}

bool bd_cli_given(int argc, char **argv, const char *flag)
{
    size_t n = strlen(flag);
    for (int a = 1; a < argc; a++) {
        if (strncmp(argv[a], flag, n) == 0 && (argv[a][n] == '\0' || argv[a][n] == '=')) {
            return true;
        }
    }
    return false;
}

int bd_cli_parse(const bd_cli_cmd_t *cmd, int argc, char **argv, void *out, FILE *help,
                 bd_err_t *err)
{
    for (size_t i = 0; i < cmd->n_opts; i++) {
        const bd_cli_opt_t *o = &cmd->opts[i];
        if (o->def && apply(o, o->flag, o->def, out, err) != 0) {
            return BD_EINVAL;
        }
    }
    for (size_t i = 0; i < cmd->n_opts; i++) {
        const bd_cli_opt_t *o = &cmd->opts[i];
        const char *env = o->env ? getenv(o->env) : NULL;
        if (env && *env && apply(o, o->env, env, out, err) != 0) {
            return BD_EINVAL;
        }
    }
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--help") == 0 || strcmp(argv[a], "-h") == 0) {
            bd_cli_usage(cmd, help);
            return BD_CLI_HELP;
        }
        const char *val = NULL;
        const bd_cli_opt_t *o = find(cmd, argv[a], &val);
        if (!o && argv[a][0] != '-') {
            return bd_err_set(err, BD_EINVAL,
                              "unexpected argument '%s': flags start with '--' (see --help)",
                              argv[a]);
        }
        if (!o) {
            return bd_err_set(err, BD_EINVAL, "unknown flag '%s' (see --help)", argv[a]);
        }
        if (o->type == BD_CLI_BOOL && !val) {
            *(bool *)(void *)((char *)out + o->offset) = true;
            continue;
        }
        if (!val) {
            /* "--concurrency --requests 5": the value is missing. A value that looks like
             * one of the command's flags goes after '=': "--name=--port". */
            const char *next_val;
            if (a + 1 >= argc || find(cmd, argv[a + 1], &next_val)) {
                return bd_err_set(err, BD_EINVAL, "%s needs a value", o->flag);
            }
            val = argv[++a];
        }
        if (apply(o, o->flag, val, out, err) != 0) {
            return BD_EINVAL;
        }
    }
    return 0;
}

void bd_cli_usage(const bd_cli_cmd_t *cmd, FILE *f)
{
    int width = 0;
    for (size_t i = 0; i < cmd->n_opts; i++) {
        int n = (int)strlen(cmd->opts[i].flag);
        width = n > width ? n : width;
    }
    fprintf(f, "%s\nflags:\n", cmd->usage);
    for (size_t i = 0; i < cmd->n_opts; i++) {
        const bd_cli_opt_t *o = &cmd->opts[i];
        const char *d = o->def ? o->def : "";
        const char *d_sep = o->def ? ", default " : "";
        fprintf(f, "  %-*s %s", width, o->flag, o->help);
        if (o->env) {
            fprintf(f, "\n  %-*s (env %s%s%s)\n", width, "", o->env, d_sep, d);
        } else if (o->def) {
            fprintf(f, " (default %s)\n", d);
        } else {
            fputc('\n', f);
        }
    }
}

bool bd_cli_cacert_ok(const char *cmd, const char *path)
{
    if (!path) {
        return true;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    int e = fd < 0 ? errno : fstat(fd, &st) != 0 ? errno : S_ISREG(st.st_mode) ? 0 : EISDIR;
    if (fd >= 0) {
        close(fd);
    }
    if (e) {
        fprintf(stderr, "batchd %s: cannot read --cacert '%s': %s\n", cmd, path,
                e == EISDIR ? "it is not a file" : strerror(e));
    }
    return e == 0;
}

bool bd_cli_model_ok(const char *cmd, const char *model)
{
    if (model && !*model) {
        fprintf(stderr, "batchd %s: --model needs a name; it was given an empty one\n", cmd);
        return false;
    }
    return true;
}

bool bd_cli_api_key_ok(const char *cmd, const char *key)
{
    size_t n = key ? strlen(key) : 0;
    bool ok = !key || (n >= 1 && n <= 256);
    for (size_t i = 0; ok && i < n; i++) {
        ok = key[i] > 0x20 && key[i] < 0x7f;
    }
    if (!ok) {
        fprintf(stderr,
                "batchd %s: --api-key (or BATCHD_API_KEY) must be 1 to 256 visible ASCII "
                "characters, without spaces\n",
                cmd);
    }
    return ok;
}
