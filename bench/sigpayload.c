/* Signal-latency payload: prints "ready", then for every SIGUSR1 the CLOCK_MONOTONIC time
 * (ns) at which it was received. Exits on SIGTERM. */
#include <signal.h>
#include <stdio.h>
#include <time.h>

int main(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, NULL);
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        int sig;
        sigwait(&set, &sig);
        if (sig == SIGTERM) return 0;
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        printf("%lld\n", (long long)t.tv_sec * 1000000000LL + t.tv_nsec);
        fflush(stdout);
    }
}
