/* wiregate.datapath._pump: the short-connection hot path in C (Linux: epoll, splice, timerfd).
 *
 * What it does is what wiregate.datapath.poller + halves do in Python, for the common case of a connection
 * whose bytes are moved unchanged: accept a batch of clients, connect a backend (with a deadline), send the
 * first bytes (a PROXY header, bytes already read), then move both directions with splice(2) through pooled
 * pipes until both have ended, passing EOF on as shutdown(SHUT_WR) and (optionally) a reset on as a reset.
 * Every decision (limits, which backend, retries, logging, counts) stays in Python: the owner object of a
 * Link is told when an asynchronous connect ends (`_pump_connected(err)`) and when the link has closed
 * (`_pump_closed()`).
 *
 * Same rules as the Python data path (docs/datapath.md): back-pressure (a half reads its source only while
 * nothing waits for its destination, so at most one pipe per direction is held), a pipe still holding bytes
 * is closed and never pooled, a level-triggered epoll set of its own (the event loop watches its descriptor),
 * events of a link closed earlier in the same batch are skipped (they carry the link, not the descriptor
 * number, so a number reused by a new socket cannot be confused with the old one).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 8                    /* read+write rounds per readiness before yielding to other links */
#define SMALL_READ (16 * 1024)      /* a shorter read ends the round without asking the source again */
#define SMALL_PIPE_READ (64 * 1024) /* read size once the held budget is exceeded */
#define BATCH 256                   /* events per run() */

enum { CONNECTING = 0, CONNECTED = 1, LINKED = 2, FAILED = 3, CLOSED = 4 };

typedef struct Pump Pump;
typedef struct Link Link;

typedef struct {
    Link *link;
    int fd;
    uint32_t mask; /* what is registered in the epoll set now (0: not registered) */
    int which;     /* 0 client, 1 backend */
} End;

typedef struct {
    int pr, pw;         /* the pipe while bytes are in flight, else -1 */
    Py_ssize_t pending; /* bytes in the pipe that the destination has not taken */
    char *rest;         /* first bytes (header, data read before) the destination has not taken yet */
    Py_ssize_t rest_len, rest_off;
    char reading, writing, eof, done;
} Half;

struct Link {
    PyObject_HEAD
    Pump *pump;
    PyObject *owner;
    End end[2];
    Half half[2]; /* 0: client -> backend, 1: backend -> client */
    int state;
    int open_halves;
    int pass_resets;
    int first_read;
    int sink_client; /* the client's bytes after the first ones are read and dropped, never forwarded */
    int error; /* the errno that ended the link (0: both directions ended normally) */
    int active;
    long idle_ticks;
    double idle_since;
    double deadline;
    Link *tprev, *tnext; /* the pump's list of connects in deadline order */
};

struct Pump {
    PyObject_HEAD
    int epfd, tfd;
    double armed; /* timerfd deadline (0: not armed) */
    Link *thead, *ttail;
    int *pipes; /* free pipes: pairs */
    int npipes, keep;
    int pipe_size;
    Py_ssize_t held, held_budget;
    long created, links;
    int dispatching;
    PyObject *grave; /* links closed during run(), released after the batch */
    char *rbuf;      /* accept(..., recv_size): the first read of each client lands here */
    Py_ssize_t rbuf_size;
    PyObject *on_error;
};

static PyTypeObject PumpType, LinkType;
static PyObject *s_connected, *s_closed;

static double now_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int is_reset_errno(int e) {
    return e == ECONNRESET || e == EPIPE || e == ECONNABORTED || e == ETIMEDOUT || e == EHOSTUNREACH;
}

/* ---- pipes ------------------------------------------------------------------------------------------------ */

static int pipe_get(Pump *P, int *pr, int *pw) {
    if (P->npipes > 0) {
        P->npipes--;
        *pr = P->pipes[2 * P->npipes];
        *pw = P->pipes[2 * P->npipes + 1];
        return 0;
    }
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) return -1;
    (void)fcntl(fds[1], F_SETPIPE_SZ, P->pipe_size); /* over the quota: the default size still works */
    P->created++;
    *pr = fds[0];
    *pw = fds[1];
    return 0;
}

static void pipe_put(Pump *P, int pr, int pw) {
    if (P->npipes < P->keep) {
        P->pipes[2 * P->npipes] = pr;
        P->pipes[2 * P->npipes + 1] = pw;
        P->npipes++;
    } else {
        close(pr);
        close(pw);
    }
}

static void set_pending(Pump *P, Half *H, Py_ssize_t n) {
    P->held += n - H->pending;
    H->pending = n;
}

/* ---- registration ----------------------------------------------------------------------------------------- */

/* Register what end `e` should be watched for now: its own half reading, the other half waiting to write. */
static void update_end(Link *L, int e) {
    End *E = &L->end[e];
    uint32_t want = (L->half[e].reading ? EPOLLIN : 0) | (L->half[1 - e].writing ? EPOLLOUT : 0);
    if (want == E->mask) return;
    struct epoll_event ev;
    ev.events = want;
    ev.data.ptr = E;
    if (E->mask == 0)
        epoll_ctl(L->pump->epfd, EPOLL_CTL_ADD, E->fd, &ev);
    else if (want == 0)
        epoll_ctl(L->pump->epfd, EPOLL_CTL_DEL, E->fd, &ev);
    else
        epoll_ctl(L->pump->epfd, EPOLL_CTL_MOD, E->fd, &ev);
    E->mask = want;
}

/* ---- the connect deadline list ----------------------------------------------------------------------------- */

static void arm(Pump *P, double when) {
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    if (when <= 0) when = 1e-9;
    its.it_value.tv_sec = (time_t)when;
    its.it_value.tv_nsec = (long)((when - (double)its.it_value.tv_sec) * 1e9);
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1;
    timerfd_settime(P->tfd, TFD_TIMER_ABSTIME, &its, NULL);
    P->armed = when;
}

static void deadline_add(Pump *P, Link *L) {
    Link *after = P->ttail;
    while (after != NULL && after->deadline > L->deadline) after = after->tprev;
    L->tprev = after;
    L->tnext = after ? after->tnext : P->thead;
    if (L->tnext) L->tnext->tprev = L; else P->ttail = L;
    if (after) after->tnext = L; else P->thead = L;
    /* arm only when this one is due before what is armed; a connect that ends early leaves the timer armed
       for a deadline nobody waits for any more: one wake-up for nothing, instead of a syscall per connect */
    if (P->armed == 0 || L->deadline < P->armed) arm(P, L->deadline);
}

static void deadline_remove(Pump *P, Link *L) {
    if (L->tprev) L->tprev->tnext = L->tnext; else if (P->thead == L) P->thead = L->tnext; else return;
    if (L->tnext) L->tnext->tprev = L->tprev; else P->ttail = L->tprev;
    L->tprev = L->tnext = NULL;
}

/* ---- ending ------------------------------------------------------------------------------------------------ */

static void call_owner(Link *L, PyObject *name, PyObject *arg) {
    PyObject *owner = L->owner;
    if (owner == NULL || owner == Py_None) return;
    Py_INCREF(owner);
    PyObject *r = arg ? PyObject_CallMethodOneArg(owner, name, arg) : PyObject_CallMethodNoArgs(owner, name);
    if (r == NULL) {
        Pump *P = L->pump;
        if (P->on_error != NULL && P->on_error != Py_None) {
            PyObject *type, *exc, *tb;
            PyErr_Fetch(&type, &exc, &tb);
            PyErr_NormalizeException(&type, &exc, &tb);
            if (exc != NULL && tb != NULL) PyException_SetTraceback(exc, tb);
            PyObject *r2 = PyObject_CallOneArg(P->on_error, exc ? exc : Py_None);
            Py_XDECREF(type);
            Py_XDECREF(exc);
            Py_XDECREF(tb);
            if (r2 == NULL) PyErr_WriteUnraisable(owner); else Py_DECREF(r2);
        } else {
            PyErr_WriteUnraisable(owner);
        }
    } else {
        Py_DECREF(r);
    }
    Py_DECREF(owner);
}

/* The pump holds a reference to every link it watches; drop it (after the batch when inside run()). */
static void release(Link *L) {
    Pump *P = L->pump;
    P->links--;
    if (P->dispatching && P->grave != NULL) {
        if (PyList_Append(P->grave, (PyObject *)L) < 0) PyErr_Clear();
    }
    Py_DECREF(L);
}

static void close_fd(int fd, int rst) {
    if (fd < 0) return;
    if (rst) {
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(fd);
}

static void drop_halves(Link *L) {
    Pump *P = L->pump;
    for (int h = 0; h < 2; h++) {
        Half *H = &L->half[h];
        if (H->pr >= 0) {
            if (H->pending) {
                close(H->pr); /* bytes still inside: never handed to another connection */
                close(H->pw);
            } else {
                pipe_put(P, H->pr, H->pw);
            }
            H->pr = H->pw = -1;
            set_pending(P, H, 0);
        }
        if (H->rest) {
            PyMem_Free(H->rest);
            H->rest = NULL;
        }
        H->reading = H->writing = 0;
    }
}

/* Close both sockets (closing removes them from the epoll set: no epoll_ctl) and tell the owner. */
static void link_close(Link *L, int rst_client, int rst_backend) {
    if (L->state == CLOSED || L->state == FAILED) return;
    if (L->state == CONNECTING) deadline_remove(L->pump, L);
    L->state = CLOSED;
    drop_halves(L);
    close_fd(L->end[1].fd, rst_backend);
    close_fd(L->end[0].fd, rst_client);
    L->end[0].fd = L->end[1].fd = -1;
    L->end[0].mask = L->end[1].mask = 0;
    Py_INCREF(L); /* the owner may drop its reference in the callback */
    call_owner(L, s_closed, NULL);
    Py_CLEAR(L->owner);
    release(L);
    Py_DECREF(L);
}

static void link_fail(Link *L, int h, int err, int reading) {
    if (L->error == 0) L->error = err;
    if (L->pass_resets && is_reset_errno(err)) {
        int src_is_client = (h == 0);
        int broken_is_client = reading ? src_is_client : !src_is_client;
        link_close(L, !broken_is_client, broken_is_client);
    } else {
        link_close(L, 0, 0);
    }
}

/* The backend connect failed or timed out: close the backend socket, leave the client's to the owner. */
static void connect_failed(Link *L, int err) {
    Pump *P = L->pump;
    deadline_remove(P, L);
    L->state = FAILED;
    L->error = err;
    if (L->half[0].rest) {
        PyMem_Free(L->half[0].rest);
        L->half[0].rest = NULL;
    }
    close(L->end[1].fd);
    L->end[1].fd = -1;
    L->end[1].mask = 0;
    Py_INCREF(L);
    PyObject *arg = PyLong_FromLong(err);
    if (arg) {
        call_owner(L, s_connected, arg);
        Py_DECREF(arg);
    } else {
        PyErr_Clear();
    }
    Py_CLEAR(L->owner);
    release(L);
    Py_DECREF(L);
}

/* ---- moving bytes ------------------------------------------------------------------------------------------ */

static void half_finish(Link *L, int h) {
    Half *H = &L->half[h];
    if (H->reading && L->open_halves > 1) {
        H->reading = 0;
        update_end(L, h);
    }
    H->done = 1;
    if (L->open_halves > 1) shutdown(L->end[1 - h].fd, SHUT_WR); /* else close() right below sends the FIN */
    if (--L->open_halves == 0) link_close(L, 0, 0);
}

static void half_blocked(Link *L, int h) {
    Half *H = &L->half[h];
    if (H->reading) {
        H->reading = 0;
        update_end(L, h);
    }
    H->writing = 1;
    update_end(L, 1 - h);
}

static void half_unblocked(Link *L, int h) {
    Half *H = &L->half[h];
    H->writing = 0;
    update_end(L, 1 - h);
    if (H->eof) {
        half_finish(L, h);
    } else {
        H->reading = 1;
        update_end(L, h);
    }
}

/* Source readable: move what is there through the pipe until the source is empty or the destination full.
   Returns the bytes taken from the source. */
static Py_ssize_t half_readable(Link *L, int h) {
    Pump *P = L->pump;
    Half *H = &L->half[h];
    int sfd = L->end[h].fd, dfd = L->end[1 - h].fd;
    Py_ssize_t moved = 0;
    L->active = 1;
    if (h == 0 && L->sink_client) {
        char scratch[16384];
        for (int round = 0; round < ROUNDS; round++) {
            ssize_t n = recv(sfd, scratch, sizeof scratch, 0);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) return moved;
                if (errno == EINTR) continue;
                link_fail(L, h, errno, 1);
                return moved;
            }
            if (n == 0) {
                H->eof = 1;
                half_finish(L, h);
                return moved;
            }
            moved += n;
        }
        return moved;
    }
    if (H->pr < 0 && pipe_get(P, &H->pr, &H->pw) < 0) {
        link_fail(L, h, errno, 1); /* out of descriptors: drop this connection, not the relay */
        return 0;
    }
    size_t size = P->held < P->held_budget ? (size_t)P->pipe_size : SMALL_PIPE_READ;
    for (int round = 0; round < ROUNDS; round++) {
        ssize_t n = splice(sfd, NULL, H->pw, NULL, size, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break; /* the pipe is empty, so the source is */
            if (errno == EINTR) continue;
            link_fail(L, h, errno, 1);
            return moved;
        }
        if (n == 0) {
            H->eof = 1;
            break;
        }
        moved += n;
        Py_ssize_t pending = n;
        while (pending) {
            ssize_t m = splice(H->pr, NULL, dfd, NULL, (size_t)pending, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (m < 0) {
                if (errno == EINTR) continue;
                int err = errno;
                set_pending(P, H, pending);
                if (err == EAGAIN || err == EWOULDBLOCK) half_blocked(L, h);
                else link_fail(L, h, err, 0);
                return moved;
            }
            pending -= m;
        }
        if (n < SMALL_READ) break; /* level-triggered: if more is there, we are called again */
    }
    pipe_put(P, H->pr, H->pw);
    H->pr = H->pw = -1;
    if (H->eof) half_finish(L, h);
    return moved;
}

/* Destination drained a little: push the first bytes or the pipe's rest, then read the source again. */
static void half_writable(Link *L, int h) {
    Pump *P = L->pump;
    Half *H = &L->half[h];
    int dfd = L->end[1 - h].fd;
    L->active = 1;
    while (H->rest) {
        ssize_t m = send(dfd, H->rest + H->rest_off, (size_t)(H->rest_len - H->rest_off), MSG_NOSIGNAL);
        if (m < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            link_fail(L, h, errno, 0);
            return;
        }
        H->rest_off += m;
        if (H->rest_off >= H->rest_len) {
            PyMem_Free(H->rest);
            H->rest = NULL;
        }
    }
    Py_ssize_t pending = H->pending;
    while (pending) {
        ssize_t m = splice(H->pr, NULL, dfd, NULL, (size_t)pending, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (m < 0) {
            if (errno == EINTR) continue;
            int err = errno;
            set_pending(P, H, pending);
            if (err != EAGAIN && err != EWOULDBLOCK) link_fail(L, h, err, 0);
            return;
        }
        pending -= m;
    }
    set_pending(P, H, 0);
    if (H->pr >= 0) {
        pipe_put(P, H->pr, H->pw);
        H->pr = H->pw = -1;
    }
    half_unblocked(L, h);
}

/* Both sockets connected: send the first bytes, watch both directions, and (first_read) move what the client
   has already sent, so that the header leaves in one segment with it. */
static void link_start(Link *L) {
    Half *up = &L->half[0];
    int bfd = L->end[1].fd;
    int corked = 0;
    L->state = LINKED;
    L->active = 1;
    if (up->rest) {
        for (;;) {
            ssize_t m = send(bfd, up->rest, (size_t)up->rest_len, MSG_NOSIGNAL | (L->first_read ? MSG_MORE : 0));
            if (m < 0 && errno == EINTR) continue;
            if (m < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                link_fail(L, 0, errno, 0);
                return;
            }
            if (m < 0) m = 0;
            up->rest_off = m;
            break;
        }
        if (up->rest_off >= up->rest_len) {
            PyMem_Free(up->rest);
            up->rest = NULL;
            corked = L->first_read;
        }
    }
    L->half[1].reading = 1;
    if (up->rest) {
        up->writing = 1; /* the rest goes out when the backend drains; the client is read after that */
        update_end(L, 1);
        return;
    }
    up->reading = 1;
    update_end(L, 0);
    update_end(L, 1);
    if (L->first_read) {
        Py_INCREF(L);
        Py_ssize_t moved = half_readable(L, 0);
        if (moved == 0 && corked && L->state == LINKED) {
            int one = 1; /* the client is silent (a server-first protocol): setting TCP_NODELAY pushes the header */
            setsockopt(bfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        Py_DECREF(L);
    }
}

static void connect_done(Link *L) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(L->end[1].fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err) {
        connect_failed(L, err);
        return;
    }
    deadline_remove(L->pump, L);
    L->state = CONNECTED;
    Py_INCREF(L);
    PyObject *zero = PyLong_FromLong(0);
    if (zero) {
        call_owner(L, s_connected, zero);
        Py_DECREF(zero);
    } else {
        PyErr_Clear();
    }
    if (L->state == CONNECTED) link_start(L);
    Py_DECREF(L);
}

static void expire(Pump *P) {
    uint64_t ticks;
    if (read(P->tfd, &ticks, sizeof ticks) < 0) { /* nothing: a stale readiness */ }
    P->armed = 0;
    double now = now_mono();
    while (P->thead != NULL && P->thead->deadline <= now) connect_failed(P->thead, -1);
    if (P->thead != NULL) arm(P, P->thead->deadline);
}

/* ---- Link type --------------------------------------------------------------------------------------------- */

static Link *link_new(Pump *P, int cfd, int bfd, PyObject *owner, PyObject *initial, int first_read,
                      int pass_resets, int sink_client) {
    Link *L = PyObject_New(Link, &LinkType);
    if (L == NULL) return NULL;
    Py_INCREF(P);
    L->pump = P;
    Py_INCREF(owner);
    L->owner = owner;
    for (int e = 0; e < 2; e++) {
        L->end[e].link = L;
        L->end[e].mask = 0;
        L->end[e].which = e;
        memset(&L->half[e], 0, sizeof(Half));
        L->half[e].pr = L->half[e].pw = -1;
    }
    L->end[0].fd = cfd;
    L->end[1].fd = bfd;
    L->state = CONNECTING;
    L->open_halves = 2;
    L->pass_resets = pass_resets;
    L->first_read = first_read;
    L->sink_client = sink_client;
    L->error = 0;
    L->active = 1;
    L->idle_ticks = 0;
    L->idle_since = 0;
    L->deadline = 0;
    L->tprev = L->tnext = NULL;
    if (initial != NULL && initial != Py_None) {
        char *buf;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(initial, &buf, &len) < 0) {
            L->end[0].fd = L->end[1].fd = -1;
            L->state = FAILED;
            Py_DECREF(L);
            return NULL;
        }
        if (len > 0) {
            L->half[0].rest = PyMem_Malloc((size_t)len);
            if (L->half[0].rest == NULL) {
                L->end[0].fd = L->end[1].fd = -1;
                L->state = FAILED;
                Py_DECREF(L);
                PyErr_NoMemory();
                return NULL;
            }
            memcpy(L->half[0].rest, buf, (size_t)len);
            L->half[0].rest_len = len;
        }
    }
    return L;
}

static void Link_dealloc(Link *L) {
    /* a link is only freed once closed or failed (the pump holds a reference until then) */
    for (int h = 0; h < 2; h++)
        if (L->half[h].rest) PyMem_Free(L->half[h].rest);
    Py_XDECREF(L->owner);
    Py_XDECREF(L->pump);
    PyObject_Free(L);
}

static PyObject *Link_close(Link *L, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"reset_client", "reset_backend", NULL};
    int rc = 0, rb = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|pp", kwlist, &rc, &rb)) return NULL;
    link_close(L, rc, rb);
    Py_RETURN_NONE;
}

static PyObject *Link_start(Link *L, PyObject *unused) {
    if (L->state != CONNECTED) {
        PyErr_SetString(PyExc_RuntimeError, "link: start() only after a connect that completed at once");
        return NULL;
    }
    link_start(L);
    Py_RETURN_NONE;
}

static PyObject *Link_get_connected(Link *L, void *c) { return PyBool_FromLong(L->state == CONNECTED); }
static PyObject *Link_get_linked(Link *L, void *c) { return PyBool_FromLong(L->state == LINKED); }
static PyObject *Link_get_closed(Link *L, void *c) { return PyBool_FromLong(L->state >= FAILED); }
static PyObject *Link_get_error(Link *L, void *c) { return PyLong_FromLong(L->error); }
static PyObject *Link_get_fileno(Link *L, void *c) { return PyLong_FromLong(L->end[1].fd); }
static PyObject *Link_get_active(Link *L, void *c) { return PyBool_FromLong(L->active); }
static int Link_set_active(Link *L, PyObject *v, void *c) {
    int b = PyObject_IsTrue(v);
    if (b < 0) return -1;
    L->active = b;
    return 0;
}
static PyObject *Link_get_idle_ticks(Link *L, void *c) { return PyLong_FromLong(L->idle_ticks); }
static int Link_set_idle_ticks(Link *L, PyObject *v, void *c) {
    long n = PyLong_AsLong(v);
    if (n == -1 && PyErr_Occurred()) return -1;
    L->idle_ticks = n;
    return 0;
}
static PyObject *Link_get_idle_since(Link *L, void *c) { return PyFloat_FromDouble(L->idle_since); }
static int Link_set_idle_since(Link *L, PyObject *v, void *c) {
    double d = PyFloat_AsDouble(v);
    if (d == -1.0 && PyErr_Occurred()) return -1;
    L->idle_since = d;
    return 0;
}

static PyGetSetDef Link_getset[] = {
    {"connected", (getter)Link_get_connected, NULL, "connected at once: call start()", NULL},
    {"linked", (getter)Link_get_linked, NULL, "connected and moving bytes", NULL},
    {"closed", (getter)Link_get_closed, NULL, "closed, or the connect failed", NULL},
    {"error", (getter)Link_get_error, NULL, "the errno that ended it (0: ended normally; -1: connect timeout)",
     NULL},
    {"backend_fileno", (getter)Link_get_fileno, NULL, "the backend socket's descriptor (-1 once closed)", NULL},
    {"active", (getter)Link_get_active, (setter)Link_set_active, "set by any traffic; cleared by an idle sweep",
     NULL},
    {"idle_ticks", (getter)Link_get_idle_ticks, (setter)Link_set_idle_ticks, "the idle sweep's counter", NULL},
    {"idle_since", (getter)Link_get_idle_since, (setter)Link_set_idle_since, "the idle sweep's time", NULL},
    {NULL},
};

static PyMethodDef Link_methods[] = {
    {"close", (PyCFunction)(void (*)(void))Link_close, METH_VARARGS | METH_KEYWORDS,
     "close(reset_client=False, reset_backend=False): close both sockets (a reset: SO_LINGER 0); idempotent"},
    {"start", (PyCFunction)Link_start, METH_NOARGS, "start moving bytes after a connect that completed at once"},
    {NULL},
};

static PyTypeObject LinkType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "wiregate.datapath._pump.Link",
    .tp_basicsize = sizeof(Link),
    .tp_dealloc = (destructor)Link_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One connection: a client socket and a backend socket, moved both ways by the pump.",
    .tp_methods = Link_methods,
    .tp_getset = Link_getset,
};

/* ---- Pump type --------------------------------------------------------------------------------------------- */

static PyObject *Pump_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"pipe_size", "keep", "held_budget", "on_error", NULL};
    int pipe_size = 1 << 20, keep = 64;
    Py_ssize_t budget = (Py_ssize_t)64 << 20;
    PyObject *on_error = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|iinO", kwlist, &pipe_size, &keep, &budget, &on_error))
        return NULL;
    if (keep < 0 || keep > 1 << 16 || pipe_size <= 0) {
        PyErr_SetString(PyExc_ValueError, "pump: keep must be 0..65536 and pipe_size positive");
        return NULL;
    }
    Pump *P = (Pump *)type->tp_alloc(type, 0);
    if (P == NULL) return NULL;
    P->epfd = P->tfd = -1;
    P->pipes = PyMem_Malloc(sizeof(int) * 2 * (size_t)(keep ? keep : 1));
    P->grave = PyList_New(0);
    if (P->pipes == NULL || P->grave == NULL) {
        Py_DECREF(P);
        return PyErr_NoMemory();
    }
    P->keep = keep;
    P->pipe_size = pipe_size;
    P->held_budget = budget;
    Py_INCREF(on_error);
    P->on_error = on_error;
    P->epfd = epoll_create1(EPOLL_CLOEXEC);
    P->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (P->epfd < 0 || P->tfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(P);
        return NULL;
    }
    struct epoll_event ev;
    ev.events = EPOLLIN;
    ev.data.ptr = NULL; /* the timer */
    if (epoll_ctl(P->epfd, EPOLL_CTL_ADD, P->tfd, &ev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(P);
        return NULL;
    }
    return (PyObject *)P;
}

static void pump_close_fds(Pump *P) {
    for (int i = 0; i < 2 * P->npipes; i++) close(P->pipes[i]);
    P->npipes = 0;
    if (P->tfd >= 0) close(P->tfd);
    if (P->epfd >= 0) close(P->epfd);
    P->tfd = P->epfd = -1;
}

static void Pump_dealloc(Pump *P) {
    pump_close_fds(P);
    PyMem_Free(P->pipes);
    PyMem_Free(P->rbuf);
    Py_XDECREF(P->grave);
    Py_XDECREF(P->on_error);
    Py_TYPE(P)->tp_free((PyObject *)P);
}

static PyObject *Pump_fileno(Pump *P, PyObject *unused) { return PyLong_FromLong(P->epfd); }

static PyObject *Pump_close(Pump *P, PyObject *unused) {
    if (P->links > 0) {
        PyErr_Format(PyExc_RuntimeError, "pump: %ld link(s) still open", P->links);
        return NULL;
    }
    pump_close_fds(P);
    Py_RETURN_NONE;
}

static PyObject *Pump_run(Pump *P, PyObject *unused) {
    struct epoll_event evs[BATCH];
    if (P->epfd < 0) Py_RETURN_NONE;
    int n = epoll_wait(P->epfd, evs, BATCH, 0);
    if (n < 0) {
        if (errno == EINTR) Py_RETURN_NONE;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    P->dispatching = 1;
    for (int i = 0; i < n; i++) {
        End *E = evs[i].data.ptr;
        uint32_t ev = evs[i].events;
        if (E == NULL) {
            expire(P);
            continue;
        }
        Link *L = E->link;
        if (L->state == CONNECTING) {
            if (E->which == 1) connect_done(L);
            continue;
        }
        if (L->state != LINKED) continue; /* closed earlier in this batch */
        int e = E->which;
        if ((ev & EPOLLIN) || (ev & (EPOLLERR | EPOLLHUP))) {
            if (L->half[e].reading) {
                half_readable(L, e);
                if (L->state != LINKED) continue;
            }
        }
        if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
            if (L->half[1 - e].writing) half_writable(L, 1 - e);
        }
    }
    P->dispatching = 0;
    if (PyList_GET_SIZE(P->grave) > 0 && PyList_SetSlice(P->grave, 0, PyList_GET_SIZE(P->grave), NULL) < 0)
        return NULL;
    return PyLong_FromLong(n);
}

static PyObject *addr_tuple(struct sockaddr_storage *ss) {
    char host[INET6_ADDRSTRLEN + 1];
    int port;
    if (ss->ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        port = ntohs(a->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) /* a dual-stack socket's IPv4 client: its IPv4 address */
            inet_ntop(AF_INET, &a->sin6_addr.s6_addr[12], host, sizeof host);
        else
            inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        port = ntohs(a->sin6_port);
    } else {
        host[0] = 0;
        port = 0;
    }
    return Py_BuildValue("(si)", host, port);
}

/* What a client sent with its connection, read at once: bytes (b"" at EOF), None (nothing yet) or an errno. */
static PyObject *first_read(Pump *P, int fd, Py_ssize_t size) {
    ssize_t n;
    do n = recv(fd, P->rbuf, (size_t)size, 0); while (n < 0 && errno == EINTR);
    if (n >= 0) return PyBytes_FromStringAndSize(P->rbuf, n);
    if (errno == EAGAIN || errno == EWOULDBLOCK) Py_RETURN_NONE;
    return PyLong_FromLong(errno);
}

static PyObject *Pump_accept(Pump *P, PyObject *args) {
    int lfd, max, want_local = 0;
    Py_ssize_t recv_size = 0;
    if (!PyArg_ParseTuple(args, "ii|pn", &lfd, &max, &want_local, &recv_size)) return NULL;
    if (recv_size < 0 || recv_size > (1 << 20)) {
        PyErr_SetString(PyExc_ValueError, "pump: recv_size must be 0..1048576");
        return NULL;
    }
    if (recv_size > P->rbuf_size) {
        char *buf = PyMem_Realloc(P->rbuf, (size_t)recv_size);
        if (buf == NULL) return PyErr_NoMemory();
        P->rbuf = buf;
        P->rbuf_size = recv_size;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    for (int i = 0; i < max; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            if (err == EAGAIN || err == EWOULDBLOCK) break;
            if (err == EINTR || err == ECONNABORTED || err == EPROTO || err == EPERM) continue; /* that client */
            if (PyList_GET_SIZE(out) > 0) break; /* the next call meets the error again */
            Py_DECREF(out);
            errno = err;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        PyObject *peer = addr_tuple(&ss), *local = NULL, *data = NULL, *item = NULL;
        if (want_local) {
            struct sockaddr_storage ls;
            socklen_t llen = sizeof ls;
            if (getsockname(fd, (struct sockaddr *)&ls, &llen) == 0) local = addr_tuple(&ls);
            else local = Py_BuildValue("(si)", "", 0);
        } else {
            Py_INCREF(Py_None);
            local = Py_None;
        }
        if (recv_size > 0) {
            data = first_read(P, fd, recv_size);
        } else {
            Py_INCREF(Py_None);
            data = Py_None;
        }
        if (peer && local && data) item = Py_BuildValue("(iOOO)", fd, peer, local, data);
        Py_XDECREF(peer);
        Py_XDECREF(local);
        Py_XDECREF(data);
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            close(fd);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(item);
    }
    return out;
}

static int parse_sockaddr(int family, PyObject *addr, struct sockaddr_storage *ss, socklen_t *len) {
    const char *host;
    int port;
    unsigned int flow = 0, scope = 0;
    memset(ss, 0, sizeof *ss);
    if (family == AF_INET) {
        if (!PyArg_ParseTuple(addr, "si", &host, &port)) return -1;
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1) goto bad;
        *len = sizeof *a;
    } else if (family == AF_INET6) {
        if (!PyArg_ParseTuple(addr, "si|II", &host, &port, &flow, &scope)) return -1;
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        a->sin6_flowinfo = htonl(flow);
        a->sin6_scope_id = scope;
        char buf[INET6_ADDRSTRLEN + 1];
        const char *pct = strchr(host, '%'); /* a zone: the scope id is given separately */
        if (pct) {
            size_t n = (size_t)(pct - host);
            if (n >= sizeof buf) goto bad;
            memcpy(buf, host, n);
            buf[n] = 0;
            host = buf;
        }
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) goto bad;
        *len = sizeof *a;
    } else {
        PyErr_SetString(PyExc_ValueError, "pump: family must be AF_INET or AF_INET6");
        return -1;
    }
    if (port < 0 || port > 65535) goto bad;
    return 0;
bad:
    PyErr_Format(PyExc_ValueError, "pump: not an IP address and port: %R", addr);
    return -1;
}

static PyObject *Pump_connect(Pump *P, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"client", "family", "addr", "initial", "timeout", "owner", "first_read",
                             "pass_resets", "sink_client", NULL};
    int cfd, family, first_read = 0, pass_resets = 0, sink_client = 0;
    PyObject *addr, *initial, *owner;
    double timeout;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iiOSdO|ppp", kwlist, &cfd, &family, &addr, &initial, &timeout,
                                     &owner, &first_read, &pass_resets, &sink_client))
        return NULL;
    if (P->epfd < 0) {
        PyErr_SetString(PyExc_RuntimeError, "pump: closed");
        return NULL;
    }
    struct sockaddr_storage ss;
    socklen_t len;
    if (parse_sockaddr(family, addr, &ss, &len) < 0) return NULL;
    int bfd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (bfd < 0) return PyErr_SetFromErrno(PyExc_OSError);
    int one = 1;
    setsockopt(bfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc;
    do rc = connect(bfd, (struct sockaddr *)&ss, len); while (rc < 0 && errno == EINTR);
    if (rc < 0 && errno != EINPROGRESS) {
        int err = errno;
        close(bfd);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Link *L = link_new(P, cfd, bfd, owner, initial, first_read, pass_resets, sink_client);
    if (L == NULL) {
        close(bfd);
        return NULL;
    }
    Py_INCREF(L); /* the pump's reference, until closed or failed */
    P->links++;
    if (rc == 0) { /* loopback and local tunnels may complete the handshake inside connect() */
        L->state = CONNECTED;
        return (PyObject *)L;
    }
    struct epoll_event ev;
    ev.events = EPOLLOUT;
    ev.data.ptr = &L->end[1];
    if (epoll_ctl(P->epfd, EPOLL_CTL_ADD, bfd, &ev) < 0) {
        int err = errno;
        L->state = FAILED;
        close(bfd);
        L->end[1].fd = -1;
        Py_CLEAR(L->owner);
        P->links--;
        Py_DECREF(L);
        Py_DECREF(L);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    L->end[1].mask = EPOLLOUT;
    L->deadline = now_mono() + (timeout > 0 ? timeout : 0);
    deadline_add(P, L);
    return (PyObject *)L;
}

static PyObject *Pump_get_stats(Pump *P, void *c) {
    return Py_BuildValue("{s:l,s:n,s:i,s:l}", "pipes_created", P->created, "held", P->held, "pipes_free",
                         P->npipes, "links", P->links);
}

static PyMethodDef Pump_methods[] = {
    {"fileno", (PyCFunction)Pump_fileno, METH_NOARGS, "the epoll descriptor for the event loop to watch"},
    {"run", (PyCFunction)Pump_run, METH_NOARGS, "handle what is ready (call when fileno() is readable)"},
    {"accept", (PyCFunction)Pump_accept, METH_VARARGS,
     "accept(listen_fd, max, want_local=False, recv_size=0) -> [(fd, (host, port), local, first)]: up to max "
     "clients, non-blocking; OSError when the first accept fails (out of descriptors). local: (host, port) with "
     "want_local, else None; first (with recv_size): what the client sent already (bytes, b'' at EOF, None when "
     "nothing yet, an int errno on error), else None"},
    {"connect", (PyCFunction)(void (*)(void))Pump_connect, METH_VARARGS | METH_KEYWORDS,
     "connect(client, family, addr, initial, timeout, owner, first_read=False, pass_resets=False, "
     "sink_client=False) -> Link (sink_client: after `initial`, the client's bytes are read and dropped)"},
    {"close", (PyCFunction)Pump_close, METH_NOARGS, "close the epoll set, the timer and the pooled pipes"},
    {NULL},
};

static PyGetSetDef Pump_getset[] = {
    {"stats", (getter)Pump_get_stats, NULL, "pipes created, bytes held in pipes, free pipes, open links", NULL},
    {NULL},
};

static PyTypeObject PumpType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "wiregate.datapath._pump.Pump",
    .tp_basicsize = sizeof(Pump),
    .tp_dealloc = (destructor)Pump_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Pump(pipe_size=1<<20, keep=64, held_budget=64<<20, on_error=None): links moved by splice",
    .tp_methods = Pump_methods,
    .tp_getset = Pump_getset,
    .tp_new = Pump_new,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "wiregate.datapath._pump", "The short-connection hot path in C (Linux).", -1, NULL,
};

PyMODINIT_FUNC PyInit__pump(void) {
    if (PyType_Ready(&PumpType) < 0 || PyType_Ready(&LinkType) < 0) return NULL;
    s_connected = PyUnicode_InternFromString("_pump_connected");
    s_closed = PyUnicode_InternFromString("_pump_closed");
    if (s_connected == NULL || s_closed == NULL) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&PumpType);
    Py_INCREF(&LinkType);
    if (PyModule_AddObject(m, "Pump", (PyObject *)&PumpType) < 0 ||
        PyModule_AddObject(m, "Link", (PyObject *)&LinkType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
