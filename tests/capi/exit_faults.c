/* Prints the page faults it has taken so far, then leaves through exit(), whose
 * destructors (a preloaded library's among them) run after the count: the parent
 * reads the whole count from wait4, and the difference is what exit faulted in. The
 * count is printed twice so that the second's path is warm. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static void print_faults(void)
{
    struct rusage ru;
    char buf[32];
    getrusage(RUSAGE_SELF, &ru);
    int n = snprintf(buf, sizeof buf, "%ld\n", ru.ru_minflt + ru.ru_majflt);
    if (n <= 0 || write(1, buf, (size_t)n) != n)
        abort();
}

int main(void)
{
    char *volatile p = malloc(64);
    if (!p)
        return 1;
    memset(p, 1, 64);
    free(p);
    print_faults();
    print_faults();
    exit(0);
}
