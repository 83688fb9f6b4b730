/* cli: the batchd command line. main.c dispatches to one function per subcommand. */
#ifndef BD_CLI_H
#define BD_CLI_H

int bd_cli_serve(int argc, char **argv);
int bd_cli_version(int argc, char **argv);
int bd_cli_bench(int argc, char **argv);

#endif
