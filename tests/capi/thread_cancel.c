/* A thread cancelled while it uses the allocator. Each round, a thread allocates and
 * frees blocks of 16 B to 4 KiB and calls malloc_trim(0) in a loop, with its own
 * cancellation point (pthread_testcancel) between calls; the main thread cancels it
 * after a few milliseconds and joins it, then another thread allocates, frees and
 * trims, and so does the main thread. The allocator must make no cancellation point
 * of its own: a thread ended inside it could leave a lock held, and the next trim
 * would wait for good (the alarm then ends the program). Prints "ok" after 50
 * rounds. */
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *trimmer(void *arg)
{
    (void)arg;
    for (;;) {
        void *p[64];
        for (int i = 0; i < 64; i++) {
            p[i] = malloc(16 + 64 * (size_t)i);
            if (!p[i])
                abort();
            memset(p[i], i, 16);
        }
        for (int i = 0; i < 64; i++)
            free(p[i]);
        malloc_trim(0);
        pthread_testcancel();
    }
    return NULL;
}

static void *user(void *arg)
{
    (void)arg;
    for (int r = 0; r < 1000; r++) {
        void *p = malloc(100 + (size_t)r);
        if (!p)
            abort();
        memset(p, 1, 100);
        free(p);
    }
    malloc_trim(0);
    return NULL;
}

int main(void)
{
    alarm(30);
    for (int round = 0; round < 50; round++) {
        pthread_t t, u;
        void *res;
        if (pthread_create(&t, NULL, trimmer, NULL) != 0)
            return 3;
        usleep(2000 + (useconds_t)round * 100);
        pthread_cancel(t);
        pthread_join(t, &res);
        if (res != PTHREAD_CANCELED)
            return 2;
        if (pthread_create(&u, NULL, user, NULL) != 0)
            return 3;
        pthread_join(u, NULL);
        malloc_trim(0);
    }
    puts("ok");
    return 0;
}
