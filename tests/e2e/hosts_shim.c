/* hosts_shim.c: a stand-in for DNS in the end-to-end tests, loaded into batchd with LD_PRELOAD
 * (test_redis.py compiles it). A test cannot edit /etc/hosts, yet the Redis ingest must be
 * shown following a name whose addresses are several servers, or change while it runs.
 *
 * getaddrinfo() reads the file named by $BD_TEST_HOSTS at every call: lines of
 * `NAME [delay=MS] ADDRESS...`. A name listed there resolves to its addresses in that order
 * (none: the name does not resolve), after MS milliseconds (a DNS server slow to answer); any
 * other name goes to the system's resolver. Each address is turned into its own list by the
 * real getaddrinfo (numeric, so no lookup) and the lists are chained: glibc's freeaddrinfo
 * frees node by node, so the chain frees as one list.
 *
 * Threads: whichever calls getaddrinfo (batchd's resolver thread). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

typedef int (*getaddrinfo_fn)(const char *, const char *, const struct addrinfo *,
                              struct addrinfo **);

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    getaddrinfo_fn real = (getaddrinfo_fn)dlsym(RTLD_NEXT, "getaddrinfo");
    const char *path = getenv("BD_TEST_HOSTS");
    FILE *f = node && path ? fopen(path, "r") : NULL;
    if (!f) {
        return real(node, service, hints, res);
    }
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        char *save = NULL;
        char *name = strtok_r(line, " \t\r\n", &save);
        if (!name || strcasecmp(name, node) != 0) {
            continue;
        }
        fclose(f);
        struct addrinfo numeric = hints ? *hints : (struct addrinfo){0};
        numeric.ai_flags |= AI_NUMERICHOST;
        struct addrinfo *head = NULL, **tail = &head;
        for (char *a; (a = strtok_r(NULL, " \t\r\n", &save)) != NULL;) {
            struct addrinfo *one = NULL;
            if (strncmp(a, "delay=", 6) == 0) {
                long ms = atol(a + 6);
                nanosleep(&(struct timespec){.tv_sec = ms / 1000, .tv_nsec = ms % 1000 * 1000000},
                          NULL);
            } else if (real(a, service, &numeric, &one) == 0) {
                *tail = one;
                while (*tail) {
                    tail = &(*tail)->ai_next;
                }
            }
        }
        *res = head;
        return head ? 0 : EAI_NONAME;
    }
    fclose(f);
    return real(node, service, hints, res);
}
