/* workpool.c -- fixed threads, a job queue, and a pipe that wakes the event loop when results
 * are ready. A pipe rather than event_active() from another thread: it needs no libevent
 * locking and works with any event_base. */
#include "workpool.h"
#include "log.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct job {
    struct job *next;
    workpool_work_fn work;
    workpool_done_fn done;
    void *arg;
};

struct workpool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *todo_head, *todo_tail; /* waiting for a thread */
    struct job *done_head;             /* finished, waiting for the loop (LIFO is fine) */
    int pending;
    bool quit;
    int nthreads;
    pthread_t *threads;
    int pipe_rd, pipe_wr;
    struct event *wake;
};

static void *thread_main(void *arg)
{
    struct workpool *wp = arg;
    pthread_mutex_lock(&wp->mu);
    for (;;) {
        while (!wp->todo_head && !wp->quit)
            pthread_cond_wait(&wp->cv, &wp->mu);
        if (!wp->todo_head)
            break;
        struct job *j = wp->todo_head;
        wp->todo_head = j->next;
        if (!wp->todo_head)
            wp->todo_tail = NULL;
        pthread_mutex_unlock(&wp->mu);
        j->work(j->arg);
        pthread_mutex_lock(&wp->mu);
        j->next = wp->done_head;
        wp->done_head = j;
        char c = 1;
        ssize_t w = write(wp->pipe_wr, &c, 1); /* non-blocking: a full pipe already wakes */
        (void)w;
    }
    pthread_mutex_unlock(&wp->mu);
    return NULL;
}

static void deliver(struct workpool *wp)
{
    pthread_mutex_lock(&wp->mu);
    struct job *j = wp->done_head;
    wp->done_head = NULL;
    pthread_mutex_unlock(&wp->mu);
    while (j) {
        struct job *next = j->next;
        wp->pending--;
        j->done(j->arg, false);
        free(j);
        j = next;
    }
}

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
    char buf[256];
    while (read(fd, buf, sizeof buf) > 0)
        ;
    deliver(arg);
}

struct workpool *workpool_new(struct event_base *base, int threads)
{
    struct workpool *wp = xcalloc(1, sizeof *wp);
    pthread_mutex_init(&wp->mu, NULL);
    pthread_cond_init(&wp->cv, NULL);
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        log_error("cannot create the worker pool pipe: %s", strerror(errno));
        abort();
    }
    wp->pipe_rd = fds[0];
    wp->pipe_wr = fds[1];
    wp->wake = event_new(base, wp->pipe_rd, EV_READ | EV_PERSIST, wake_cb, wp);
    event_add(wp->wake, NULL);
    wp->nthreads = threads;
    wp->threads = xcalloc((size_t)threads, sizeof(pthread_t));
    for (int i = 0; i < threads; i++)
        if (pthread_create(&wp->threads[i], NULL, thread_main, wp) != 0) {
            log_error("cannot start worker thread %d", i);
            abort();
        }
    return wp;
}

void workpool_submit(struct workpool *wp, workpool_work_fn work, workpool_done_fn done, void *arg)
{
    struct job *j = xcalloc(1, sizeof *j);
    j->work = work;
    j->done = done;
    j->arg = arg;
    pthread_mutex_lock(&wp->mu);
    if (wp->todo_tail)
        wp->todo_tail->next = j;
    else
        wp->todo_head = j;
    wp->todo_tail = j;
    wp->pending++;
    pthread_cond_signal(&wp->cv);
    pthread_mutex_unlock(&wp->mu);
}

int workpool_pending(struct workpool *wp)
{
    return wp->pending;
}

void workpool_free(struct workpool *wp)
{
    if (!wp)
        return;
    pthread_mutex_lock(&wp->mu);
    struct job *cancelled = wp->todo_head;
    wp->todo_head = wp->todo_tail = NULL;
    wp->quit = true;
    pthread_cond_broadcast(&wp->cv);
    pthread_mutex_unlock(&wp->mu);
    for (int i = 0; i < wp->nthreads; i++)
        pthread_join(wp->threads[i], NULL);
    deliver(wp);
    while (cancelled) {
        struct job *next = cancelled->next;
        wp->pending--;
        cancelled->done(cancelled->arg, true);
        free(cancelled);
        cancelled = next;
    }
    event_free(wp->wake);
    close(wp->pipe_rd);
    close(wp->pipe_wr);
    pthread_cond_destroy(&wp->cv);
    pthread_mutex_destroy(&wp->mu);
    free(wp->threads);
    free(wp);
}
