/* mailbox.c: the one mechanism that brings completions back to their owner thread (see
 * core.h). A mutex-guarded singly linked FIFO of intrusive bd_mail_t plus an eventfd.
 *
 * Threads: bd_mailbox_post from any thread; everything else on the owner thread. The eventfd
 * is written only by the post that finds the list empty, and read (reset) by the drain
 * before it takes the list, so a post racing with a drain either lands in this drain's list
 * or writes the eventfd again for the next one: no mail is ever left without a wake-up. The
 * one exception is the owner's own posts while it holds its mailbox (bd_mailbox_hold): they
 * write nothing, and the owner drains them itself before its loop waits again. */
#include "core/core.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct bd_mailbox {
    pthread_mutex_t mu;
    bd_mail_t *head, *tail; /* under mu */
    int efd;
};

/* The mailbox whose posts made on this thread write no wake-up (bd_mailbox_hold), or NULL;
 * only ever set on an owner thread. */
static _Thread_local bd_mailbox_t *held;

bd_mailbox_t *bd_mailbox_new(bd_err_t *err)
{
    bd_mailbox_t *mb = calloc(1, sizeof *mb);
    if (!mb) {
        bd_err_set(err, BD_ENOMEM, "out of memory");
        return NULL;
    }
    mb->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (mb->efd < 0) {
        bd_err_set(err, BD_EIO, "cannot create an eventfd: %s", strerror(errno));
        free(mb);
        return NULL;
    }
    pthread_mutex_init(&mb->mu, NULL);
    return mb;
}

void bd_mailbox_free(bd_mailbox_t *mb)
{
    if (!mb) {
        return;
    }
    if (held == mb) {
        held = NULL;
    }
    bd_mailbox_drain(mb);
    close(mb->efd);
    pthread_mutex_destroy(&mb->mu);
    free(mb);
}

int bd_mailbox_fd(const bd_mailbox_t *mb)
{
    return mb->efd;
}

void bd_mailbox_post(bd_mailbox_t *mb, bd_mail_t *mail)
{
    mail->next = NULL;
    pthread_mutex_lock(&mb->mu);
    bool was_empty = mb->head == NULL;
    if (was_empty) {
        mb->head = mail;
    } else {
        mb->tail->next = mail;
    }
    mb->tail = mail;
    pthread_mutex_unlock(&mb->mu);
    if (was_empty && held != mb) {
        uint64_t one = 1;
        while (write(mb->efd, &one, sizeof one) < 0 && errno == EINTR) {
        }
    }
}

void bd_mailbox_hold(bd_mailbox_t *mb)
{
    held = mb;
}

static size_t run_posted(bd_mailbox_t *mb);

size_t bd_mailbox_drain(bd_mailbox_t *mb)
{
    uint64_t count;
    while (read(mb->efd, &count, sizeof count) < 0 && errno == EINTR) {
    }
    return run_posted(mb);
}

size_t bd_mailbox_drain_held(bd_mailbox_t *mb)
{
    held = NULL;
    return run_posted(mb);
}

static size_t run_posted(bd_mailbox_t *mb)
{
    pthread_mutex_lock(&mb->mu);
    bd_mail_t *list = mb->head;
    mb->head = mb->tail = NULL;
    pthread_mutex_unlock(&mb->mu);
    size_t n = 0;
    while (list) {
        bd_mail_t *m = list;
        list = m->next; /* read before the callback: it may free or repost `m` */
        m->next = NULL;
        m->cb(m);
        n++;
    }
    return n;
}
