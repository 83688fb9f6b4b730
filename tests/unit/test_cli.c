/* test_cli: the option-table engine (opts.c) that parses `batchd serve` and `batchd bench`
 * flags: every type (string, integer, number, duration, boolean, list), precedence (flag >
 * environment > default, the last flag winning), `--flag value` and `--flag=value`, each
 * error sentence byte for byte, and the generated --help.
 *
 * Threads: single-threaded; the environment variables are the test's own (BD_TEST_CLI_*),
 * set and unset around each use. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

typedef struct {
    const char *name;
    int64_t port;
    double pct;
    uint64_t timeout_us;
    bool verbose;
    bd_cli_list_t tags;
} topts_t;

#define OFF(f) offsetof(topts_t, f)
static const bd_cli_opt_t rows[] = {
    {"--name", BD_CLI_STR, OFF(name), "anon", 0, 0, "BD_TEST_CLI_NAME", "who"},
    {"--port", BD_CLI_INT, OFF(port), "8000", 0, 65535, "BD_TEST_CLI_PORT", "where"},
    {"--pct", BD_CLI_NUM, OFF(pct), "10", 0.5, 100, NULL, "how much"},
    {"--timeout", BD_CLI_DUR, OFF(timeout_us), "10s", 0.001, 3600, NULL, "how long"},
    {"--verbose", BD_CLI_BOOL, OFF(verbose), NULL, 0, 0, "BD_TEST_CLI_VERBOSE", "talk"},
    {"--tag", BD_CLI_LIST, OFF(tags), NULL, 0, 0, NULL, "label (repeatable)"},
};
static const bd_cli_cmd_t cmd = {
    .usage = "usage: t [flags]\n",
    .opts = rows,
    .n_opts = sizeof rows / sizeof rows[0],
};

/* Parse argv (NULL-terminated, without the command name) into *o. */
static int parse(topts_t *o, bd_err_t *err, const char *const *args)
{
    char *argv[2 * BD_CLI_LIST_MAX + 8] = {"t"};
    int argc = 1;
    for (; args[argc - 1]; argc++) {
        argv[argc] = (char *)args[argc - 1];
    }
    memset(o, 0, sizeof *o);
    memset(err, 0, sizeof *err);
    return bd_cli_parse(&cmd, argc, argv, o, stdout, err);
}

#define PARSE(o, err, ...) parse(o, err, (const char *const[]){__VA_ARGS__, NULL})

static void expect_error(const char *want, const char *const *args)
{
    topts_t o;
    bd_err_t err;
    assert_int_equal(parse(&o, &err, args), BD_EINVAL);
    assert_int_equal(err.code, BD_EINVAL);
    assert_string_equal(err.msg, want);
}

#define EXPECT_ERROR(want, ...) expect_error(want, (const char *const[]){__VA_ARGS__, NULL})

static void test_defaults(void **state)
{
    (void)state;
    topts_t o;
    bd_err_t err;
    assert_int_equal(parse(&o, &err, (const char *const[]){NULL}), 0);
    assert_string_equal(o.name, "anon");
    assert_int_equal(o.port, 8000);
    assert_true(o.pct == 10.0);
    assert_int_equal(o.timeout_us, 10000000);
    assert_false(o.verbose);
    assert_int_equal(o.tags.n, 0);
}

static void test_every_type_both_forms(void **state)
{
    (void)state;
    topts_t o;
    bd_err_t err;
    assert_int_equal(PARSE(&o, &err, "--name", "x", "--port=0", "--pct", "99.5", "--timeout=250ms",
                           "--verbose", "--tag", "a", "--tag=b=c"),
                     0);
    assert_string_equal(o.name, "x");
    assert_int_equal(o.port, 0);
    assert_true(o.pct == 99.5);
    assert_int_equal(o.timeout_us, 250000);
    assert_true(o.verbose);
    assert_int_equal(o.tags.n, 2);
    assert_string_equal(o.tags.v[0], "a");
    assert_string_equal(o.tags.v[1], "b=c");
    /* A value may look like a flag after '=' (the next argument that is one of the flags
     * means the value is missing); an empty value after '=' is a value too. */
    assert_int_equal(PARSE(&o, &err, "--name=--port", "--port", "65535"), 0);
    assert_string_equal(o.name, "--port");
    assert_int_equal(o.port, 65535);
    assert_int_equal(PARSE(&o, &err, "--name", "--portal"), 0);
    assert_string_equal(o.name, "--portal");
    assert_int_equal(PARSE(&o, &err, "--name="), 0);
    assert_string_equal(o.name, "");
}

static void test_durations(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        uint64_t us;
    } cases[] = {{"10s", 10000000}, {"500ms", 500000}, {"1000us", 1000},     {"2m", 120000000},
                 {"1.5", 1500000},  {"0.001", 1000},   {"3600s", 3600000000}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        topts_t o;
        bd_err_t err;
        assert_int_equal(PARSE(&o, &err, "--timeout", cases[i].text), 0);
        assert_int_equal(o.timeout_us, cases[i].us);
    }
}

static void test_precedence_flag_env_default(void **state)
{
    (void)state;
    topts_t o;
    bd_err_t err;
    setenv("BD_TEST_CLI_PORT", "9000", 1);
    setenv("BD_TEST_CLI_NAME", "", 1); /* empty: as if unset */
    setenv("BD_TEST_CLI_VERBOSE", "yes", 1);
    assert_int_equal(parse(&o, &err, (const char *const[]){NULL}), 0);
    assert_int_equal(o.port, 9000);
    assert_string_equal(o.name, "anon");
    assert_true(o.verbose);
    /* A flag beats the environment; of two flags the last wins. */
    assert_int_equal(PARSE(&o, &err, "--port", "1", "--port=2"), 0);
    assert_int_equal(o.port, 2);
    setenv("BD_TEST_CLI_VERBOSE", "0", 1);
    assert_int_equal(PARSE(&o, &err, "--verbose"), 0);
    assert_true(o.verbose);
    /* "--flag=false" turns off what the variable turned on, and "=yes" is a plain "--flag". */
    setenv("BD_TEST_CLI_VERBOSE", "1", 1);
    assert_int_equal(PARSE(&o, &err, "--verbose=false"), 0);
    assert_false(o.verbose);
    assert_int_equal(PARSE(&o, &err, "--verbose=no", "--verbose=yes"), 0);
    assert_true(o.verbose);
    /* A malformed variable is an error that names it, even when a flag overrides it. */
    setenv("BD_TEST_CLI_PORT", "x", 1);
    EXPECT_ERROR("BD_TEST_CLI_PORT must be an integer from 0 to 65535, got 'x'", "--port", "1");
    unsetenv("BD_TEST_CLI_PORT");
    setenv("BD_TEST_CLI_VERBOSE", "maybe", 1);
    EXPECT_ERROR("BD_TEST_CLI_VERBOSE must be 1, true, yes, 0, false or no, got 'maybe'", "--tag",
                 "a");
    unsetenv("BD_TEST_CLI_VERBOSE");
    unsetenv("BD_TEST_CLI_NAME");
}

static void test_error_sentences(void **state)
{
    (void)state;
    EXPECT_ERROR("--port must be an integer from 0 to 65535, got '65536'", "--port", "65536");
    EXPECT_ERROR("--port must be an integer from 0 to 65535, got '-1'", "--port=-1");
    EXPECT_ERROR("--port must be an integer from 0 to 65535, got '1.0'", "--port", "1.0");
    EXPECT_ERROR("--port must be an integer from 0 to 65535, got ''", "--port=");
    EXPECT_ERROR("--port must be an integer from 0 to 65535, got '99999999999999999999'", "--port",
                 "99999999999999999999");
    EXPECT_ERROR("--pct must be a number from 0.5 to 100, got '0.1'", "--pct", "0.1");
    EXPECT_ERROR("--pct must be a number from 0.5 to 100, got 'inf'", "--pct", "inf");
    EXPECT_ERROR("--pct must be a number from 0.5 to 100, got '5x'", "--pct", "5x");
    EXPECT_ERROR("--timeout must be a duration like 10s, 500ms or 2m from 0.001s to 3600s, got "
                 "'soon'",
                 "--timeout", "soon");
    EXPECT_ERROR("--timeout must be a duration like 10s, 500ms or 2m from 0.001s to 3600s, got "
                 "'2h'",
                 "--timeout", "2h");
    EXPECT_ERROR("--timeout must be a duration like 10s, 500ms or 2m from 0.001s to 3600s, got "
                 "'100us'",
                 "--timeout", "5ms", "--timeout", "100us");
    EXPECT_ERROR("--timeout must be a duration like 10s, 500ms or 2m from 0.001s to 3600s, got "
                 "'0'",
                 "--timeout", "0");
    EXPECT_ERROR("--timeout needs a value", "--timeout", "--name", "x");
    EXPECT_ERROR("--port needs a value", "--port", "--verbose");
    EXPECT_ERROR("--name needs a value", "--name", "--port", "1");
    EXPECT_ERROR("unknown flag '--nope' (see --help)", "--nope");
    EXPECT_ERROR("unknown flag '--portx' (see --help)", "--portx", "1");
    EXPECT_ERROR("unexpected argument 'port': flags start with '--' (see --help)", "port");
    EXPECT_ERROR("--verbose must be 1, true, yes, 0, false or no, got 'maybe'", "--verbose=maybe");
    EXPECT_ERROR("--verbose must be 1, true, yes, 0, false or no, got ''", "--verbose=");
    EXPECT_ERROR("--name needs a value", "--port", "1", "--name");
}

static void test_list_is_bounded(void **state)
{
    (void)state;
    const char *args[2 * BD_CLI_LIST_MAX + 3];
    size_t n = 0;
    for (int i = 0; i <= BD_CLI_LIST_MAX; i++) {
        args[n++] = "--tag";
        args[n++] = "t";
    }
    args[n] = NULL;
    expect_error("--tag may be given at most 32 times", args);
    args[n - 2] = NULL; /* exactly BD_CLI_LIST_MAX */
    topts_t o;
    bd_err_t err;
    assert_int_equal(parse(&o, &err, args), 0);
    assert_int_equal(o.tags.n, BD_CLI_LIST_MAX);
}

static void test_help_from_the_table(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    bd_cli_usage(&cmd, f);
    fclose(f);
    assert_string_equal(text, "usage: t [flags]\n"
                              "\n"
                              "flags:\n"
                              "  --name    who\n"
                              "            (env BD_TEST_CLI_NAME, default anon)\n"
                              "  --port    where\n"
                              "            (env BD_TEST_CLI_PORT, default 8000)\n"
                              "  --pct     how much (default 10)\n"
                              "  --timeout how long (default 10s)\n"
                              "  --verbose talk\n"
                              "            (env BD_TEST_CLI_VERBOSE)\n"
                              "  --tag     label (repeatable)\n");
    free(text);

    /* --help or -h prints it and says so, unless a bad argument came first. */
    topts_t o = {0};
    bd_err_t err;
    char *argv[] = {"t", "--port", "1", "-h", "--nope"};
    text = NULL;
    f = open_memstream(&text, &len);
    assert_non_null(f);
    assert_int_equal(bd_cli_parse(&cmd, 5, argv, &o, f, &err), BD_CLI_HELP);
    fclose(f);
    assert_true(strncmp(text, "usage: t [flags]\n", 17) == 0);
    free(text);
    EXPECT_ERROR("unknown flag '--nope' (see --help)", "--nope", "--help");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_every_type_both_forms),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_precedence_flag_env_default),
        cmocka_unit_test(test_error_sentences),
        cmocka_unit_test(test_list_is_bounded),
        cmocka_unit_test(test_help_from_the_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
