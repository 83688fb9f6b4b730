/* main.c: `batchd <command> [flags]`. Dispatches to the subcommands; main thread only. */
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "backend/backend.h"
#include "cli/cli.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: batchd <command> [flags]\n\n"
               "commands:\n"
               "  serve     serve a model repository over HTTP (KServe v2)\n"
               "  bench     load-test a KServe v2 server: concurrency sweeps or request rates\n"
               "  infer     send one request (images, raw tensors or JSON) and print the reply\n"
               "  inspect   print a model's inputs, outputs, shapes and batch dimension\n"
               "  version   print batchd's and ONNX Runtime's versions [--onnxruntime-lib PATH]\n\n"
               "`batchd <command> --help` lists a command's flags.\n");
}

typedef struct {
    const char *ort_lib;
} version_opts_t;

static const bd_cli_opt_t vopts[] = {
    {"--onnxruntime-lib", BD_CLI_STR, offsetof(version_opts_t, ort_lib), NULL, 0, 0,
     "BATCHD_ONNXRUNTIME_LIB",
     "libonnxruntime.so.1 to report on (default: the one batchd was built with)"},
};
static const bd_cli_cmd_t version_cmd = {
    .usage = "usage: batchd version [--onnxruntime-lib PATH]\n"
             "prints batchd's version, the ONNX Runtime library it loads (path, version, API "
             "version) and whether it has the CUDA provider; exits 1 when the library cannot "
             "be loaded\n",
    .opts = vopts,
    .n_opts = sizeof vopts / sizeof vopts[0],
};

int bd_cli_version(int argc, char **argv)
{
    version_opts_t o = {0};
    bd_err_t err = {0};
    int rc = bd_cli_parse(&version_cmd, argc, argv, &o, stdout, &err);
    if (rc == BD_CLI_HELP) {
        return 0;
    }
    if (rc != 0) {
        fprintf(stderr, "batchd version: %s\n", err.msg);
        return 2;
    }
    printf("batchd %s\n", BD_VERSION);
    bd_log_set_level(BD_LOG_WARN); /* the answer says which library loaded, without a log line */
    bd_ort_info_t info;
    if (bd_ort_init(o.ort_lib, &err) != 0 || !bd_ort_info(&info)) {
        printf("onnxruntime unavailable: %s\n", err.msg);
        return 1;
    }
    printf("onnxruntime %s\n", info.version);
    printf("onnxruntime library: %s\n", info.path);
    printf("onnxruntime api: %u\n", info.api_version);
    if (info.cuda_provider) {
        printf("onnxruntime cuda provider: %s\n", info.cuda_provider);
    } else {
        printf("onnxruntime cuda provider: none (no libonnxruntime_providers_cuda.so and "
               "libonnxruntime_providers_shared.so beside the library; `make setup GPU=1` "
               "installs a GPU build)\n");
    }
    bd_ort_shutdown();
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "serve") == 0) {
        /* SIGHUP reloads the key file once serving; one that comes while the server starts
         * (reading flags, certificates, keys) waits for the loop instead of ending the
         * process. The mask and the pending signal survive the exec below. */
        sigset_t hup;
        sigemptyset(&hup);
        sigaddset(&hup, SIGHUP);
        sigprocmask(SIG_BLOCK, &hup, NULL);
        bd_cli_hugepages_reexec(argv);
        return bd_cli_serve(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "bench") == 0) {
        return bd_cli_bench(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "infer") == 0) {
        return bd_cli_infer(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "inspect") == 0) {
        return bd_cli_inspect(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        return bd_cli_version(argc - 1, argv + 1);
    }
    fprintf(stderr, "batchd: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
