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
#define PROBE_MISSES 8              /* early sends that found the connect still going before the pump ... */
#define PROBE_SKIP 256              /* ... leaves this many connects without one */
#define HEAD_MAX 512                /* fast routes: bytes kept while a PROXY header is still coming */
#define NOT_ENDED INT32_MIN         /* head_handoff: the client has not ended (its bytes are Python's to judge) */
#define MAX_IFS 64                  /* fast routes: trusted_interface indexes */
#define MAX_NETS 256                /* fast routes: trusted networks matched in C (more: Python decides) */

/* HEAD: a fast route's client whose PROXY header is not whole yet (no backend socket) */
enum { HEAD = 0, CONNECTING = 1, CONNECTED = 2, LINKED = 3, FAILED = 4, CLOSED = 5 };

typedef struct Pump Pump;
typedef struct Link Link;
typedef struct Fast Fast;

typedef union { /* an IPv4 or IPv6 socket address, without sockaddr_storage's 100 unused bytes per link */
    struct sockaddr sa;
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
} Addr;

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
    Link *tprev, *tnext; /* the pump's list of deadlines (connects, heads) in deadline order */
    /* links a fast route made (Fast): no Python owner, counted and listed by their route */
    Fast *fast;
    Link *fprev, *fnext;
    char *head; /* HEAD: the bytes read so far (HEAD_MAX) */
    int head_len;
    double since; /* when the client was accepted */
    Addr peer;
    Addr client; /* the PROXY header's source */
};

typedef struct {
    int family; /* AF_INET or AF_INET6 */
    int prefix;
    uint8_t addr[16];
} Net;

/* A listener's fast route: a trusted peer's PROXY v2 header (PROXY command, TCP over IPv4 or IPv6, no TLVs) is
   read and checked here, and the connection goes to one literal target with the same v2 header or none, without
   a Python call. Anything else (an untrusted peer, a v1, LOCAL or TLV-carrying header, a malformed one, EOF or a
   timeout before it is whole) is handed to Python with the bytes read so far, which decides as it always does. */
struct Fast {
    PyObject_HEAD
    PyObject *owner; /* _pump_head(fd, peer, local, data, end, since), _pump_unreachable(client, peer, err),
                        _pump_routed(client, peer) */
    int enabled;
    Net nets[MAX_NETS];
    int nnets;
    int ifindex[MAX_IFS]; /* trusted_interface: a trusted peer counts only when its SYN came in on one of these */
    int nifs;             /* -1: any interface */
    struct sockaddr_storage target;
    socklen_t target_len;
    int send_v2;
    double header_timeout, connect_timeout;
    int max_header;   /* the listener's max_header_bytes: a longer v2 header is Python's to refuse */
    long max_open;    /* max_connections */
    int want_local;   /* a wildcard listener: the local address is looked up when handed to Python */
    int log_routed;   /* call _pump_routed for each connection (INFO logging is on) */
    long open, accepted;
    Link *lhead;      /* its links */
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
    long early;                   /* connects found complete by sending the first bytes at once */
    int probe_misses, probe_skip; /* link_connect's early send: misses in a row; connects left without it */
    int dispatching;
    PyObject *grave; /* links closed during run(), released after the batch */
    char *rbuf;      /* accept(..., recv_size): the first read of each client lands here */
    Py_ssize_t rbuf_size;
    PyObject *on_error;
};

static PyTypeObject PumpType, LinkType, FastType;
static PyObject *s_connected, *s_closed, *s_head, *s_unreachable, *s_routed;

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
    uint32_t want = (L->half[e].reading ? EPOLLIN | EPOLLRDHUP : 0) | (L->half[1 - e].writing ? EPOLLOUT : 0);
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

/* Call owner.name(*args); an exception goes to the pump's on_error (the event loop's handler). */
static void call_method(Pump *P, PyObject *owner, PyObject *name, PyObject *const *args, size_t nargs) {
    if (owner == NULL || owner == Py_None) return;
    Py_INCREF(owner);
    PyObject *stack[8];
    stack[0] = owner;
    for (size_t i = 0; i < nargs && i < 7; i++) stack[i + 1] = args[i];
    PyObject *r = PyObject_VectorcallMethod(name, stack, (nargs + 1) | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (r == NULL) {
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

static void call_owner(Link *L, PyObject *name, PyObject *arg) {
    call_method(L->pump, L->owner, name, &arg, arg ? 1 : 0);
}

/* The fast route's owner (held weakly: the owner holds the route), or NULL when it is gone. */
static PyObject *fast_owner(Fast *F) {
    if (F->owner == NULL) return NULL;
    PyObject *o = PyWeakref_GetObject(F->owner);
    return (o == NULL || o == Py_None) ? NULL : o;
}

static void fast_detach(Link *L) {
    Fast *F = L->fast;
    if (F == NULL) return;
    if (L->fprev) L->fprev->fnext = L->fnext; else F->lhead = L->fnext;
    if (L->fnext) L->fnext->fprev = L->fprev;
    L->fprev = L->fnext = NULL;
    F->open--;
    L->fast = NULL;
    Py_DECREF(F);
}

/* The pump holds a reference to every link it watches; drop it (after the batch when inside run()). */
static void release(Link *L) {
    Pump *P = L->pump;
    fast_detach(L);
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
    if (L->state == CONNECTING || L->state == HEAD) deadline_remove(L->pump, L);
    L->state = CLOSED;
    drop_halves(L);
    if (L->head) {
        PyMem_Free(L->head);
        L->head = NULL;
    }
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

static PyObject *addr_tuple(struct sockaddr_storage *ss);

static PyObject *addr_tuple_a(const Addr *a) {
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    memcpy(&ss, a, sizeof *a);
    return addr_tuple(&ss);
}

/* A fast route's target did not answer: close the client (the route is not HTTP-aware: no 502) and tell the
   owner (_pump_unreachable(client, peer, err): it counts and logs). */
static void fast_unreachable(Link *L, int err) {
    Pump *P = L->pump;
    Fast *F = L->fast;
    Py_INCREF(F);
    L->state = FAILED;
    L->error = err;
    close(L->end[0].fd);
    L->end[0].fd = -1;
    L->end[0].mask = 0;
    PyObject *args[3] = {addr_tuple_a(&L->client), addr_tuple_a(&L->peer), PyLong_FromLong(err)};
    Py_INCREF(L);
    release(L);
    if (args[0] && args[1] && args[2]) call_method(P, fast_owner(F), s_unreachable, args, 3);
    else PyErr_Clear();
    for (int i = 0; i < 3; i++) Py_XDECREF(args[i]);
    Py_DECREF(L);
    Py_DECREF(F);
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
    if (L->fast) {
        fast_unreachable(L, err);
        return;
    }
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
   `fin`: the source's FIN has arrived (EPOLLRDHUP), so once its bytes are read EOF follows: the last bytes go
   out corked and the shutdown() that passes the EOF on sends the FIN in their segment (one segment fewer for
   the destination, and EOF read in the same round instead of the next wake-up). Returns the bytes taken. */
static Py_ssize_t half_readable(Link *L, int h, int fin) {
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
    int corked = 0;
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
        int last = fin && n < (ssize_t)SMALL_READ; /* the source is drained and has ended: EOF is next */
        Py_ssize_t pending = n;
        while (pending) {
            ssize_t m = splice(H->pr, NULL, dfd, NULL, (size_t)pending,
                               SPLICE_F_MOVE | SPLICE_F_NONBLOCK | (last ? SPLICE_F_MORE : 0));
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
        corked |= last;
        if (n < SMALL_READ && !last) break; /* level-triggered: if more is there, we are called again */
    }
    pipe_put(P, H->pr, H->pw);
    H->pr = H->pw = -1;
    if (H->eof) {
        half_finish(L, h); /* shutdown() or close(): the FIN leaves with the corked bytes */
    } else if (corked) { /* (not expected after a FIN, but the bytes must not wait): push them */
        int one = 1;
        setsockopt(dfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
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
        while (up->rest_off < up->rest_len) { /* (link_connect may have sent it already) */
            ssize_t m = send(bfd, up->rest + up->rest_off, (size_t)(up->rest_len - up->rest_off),
                             MSG_NOSIGNAL | (L->first_read ? MSG_MORE : 0));
            if (m < 0 && errno == EINTR) continue;
            if (m < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                link_fail(L, 0, errno, 0);
                return;
            }
            if (m > 0) up->rest_off += m;
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
        Py_ssize_t moved = half_readable(L, 0, 0);
        if (moved == 0 && corked && L->state == LINKED) {
            int one = 1; /* the client is silent (a server-first protocol): setting TCP_NODELAY pushes the header */
            setsockopt(bfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        Py_DECREF(L);
    }
}

/* A fast route's backend answered: count it, and name the real client to the owner when it logs them. */
static void fast_connected(Link *L) {
    Fast *F = L->fast;
    F->accepted++;
    if (!F->log_routed) return;
    PyObject *owner = fast_owner(F);
    if (owner == NULL) return;
    PyObject *args[2] = {addr_tuple_a(&L->client), addr_tuple_a(&L->peer)};
    if (args[0] && args[1]) call_method(L->pump, owner, s_routed, args, 2);
    else PyErr_Clear();
    Py_XDECREF(args[0]);
    Py_XDECREF(args[1]);
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
    if (L->fast) {
        fast_connected(L);
    } else {
        PyObject *zero = PyLong_FromLong(0);
        if (zero) {
            call_owner(L, s_connected, zero);
            Py_DECREF(zero);
        } else {
            PyErr_Clear();
        }
    }
    if (L->state == CONNECTED) link_start(L);
    Py_DECREF(L);
}

static void head_handoff(Link *L, int end);
static void head_readable(Link *L);

static void expire(Pump *P) {
    uint64_t ticks;
    if (read(P->tfd, &ticks, sizeof ticks) < 0) { /* nothing: a stale readiness */ }
    P->armed = 0;
    double now = now_mono();
    while (P->thead != NULL && P->thead->deadline <= now) {
        if (P->thead->state == HEAD) head_handoff(P->thead, -1);
        else connect_failed(P->thead, -1);
    }
    if (P->thead != NULL) arm(P, P->thead->deadline);
}

/* ---- Link type --------------------------------------------------------------------------------------------- */

static Link *link_alloc(Pump *P, PyObject *owner) {
    Link *L = PyObject_New(Link, &LinkType);
    if (L == NULL) return NULL;
    Py_INCREF(P);
    L->pump = P;
    Py_XINCREF(owner);
    L->owner = owner;
    for (int e = 0; e < 2; e++) {
        L->end[e].link = L;
        L->end[e].mask = 0;
        L->end[e].which = e;
        memset(&L->half[e], 0, sizeof(Half));
        L->half[e].pr = L->half[e].pw = -1;
    }
    L->end[0].fd = L->end[1].fd = -1;
    L->state = CONNECTING;
    L->open_halves = 2;
    L->pass_resets = 0;
    L->first_read = 0;
    L->sink_client = 0;
    L->error = 0;
    L->active = 1;
    L->idle_ticks = 0;
    L->idle_since = 0;
    L->deadline = 0;
    L->tprev = L->tnext = NULL;
    L->fast = NULL;
    L->fprev = L->fnext = NULL;
    L->head = NULL;
    L->head_len = 0;
    L->since = 0;
    L->peer.sa.sa_family = L->client.sa.sa_family = AF_UNSPEC;
    return L;
}

static Link *link_new(Pump *P, int cfd, int bfd, PyObject *owner, PyObject *initial, int first_read,
                      int pass_resets, int sink_client) {
    Link *L = link_alloc(P, owner);
    if (L == NULL) return NULL;
    L->end[0].fd = cfd;
    L->end[1].fd = bfd;
    L->state = CONNECTING;
    L->pass_resets = pass_resets;
    L->first_read = first_read;
    L->sink_client = sink_client;
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
    if (L->head) PyMem_Free(L->head);
    Py_XDECREF(L->fast);
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
static PyObject *Link_get_head(Link *L, void *c) { return PyBool_FromLong(L->state == HEAD); }
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
    {"head", (getter)Link_get_head, NULL, "a fast route's client whose PROXY header is not whole yet", NULL},
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
        if (L->state == HEAD) {
            if (E->which == 0) head_readable(L);
            continue;
        }
        if (L->state == CONNECTING) {
            if (E->which == 1) connect_done(L);
            continue;
        }
        if (L->state != LINKED) continue; /* closed earlier in this batch */
        int e = E->which;
        if ((ev & EPOLLIN) || (ev & (EPOLLERR | EPOLLHUP))) {
            if (L->half[e].reading) {
                half_readable(L, e, (ev & EPOLLRDHUP) != 0);
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

/* ---- fast routes ------------------------------------------------------------------------------------------- */

static const uint8_t V2_SIG[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
enum { P_OK, P_MORE, P_NO };

/* The start of a connection from a trusted peer: P_OK when it begins with a whole PROXY v2 header of the one
   shape taken here (PROXY command, TCP over IPv4 or over IPv6 without IPv4-mapped addresses, no TLVs, within
   max_header; *hlen: its length), P_MORE when what came is a prefix of such a header, P_NO for anything else
   (Python's decoder then accepts or refuses it, as for any connection). */
static int fast_parse(const Fast *F, const uint8_t *b, Py_ssize_t n, int *hlen) {
    if (memcmp(b, V2_SIG, (size_t)(n < 12 ? n : 12)) != 0) return P_NO;
    if (n < 13) return P_MORE;
    if (b[12] != 0x21) return P_NO;
    if (n < 14) return P_MORE;
    int alen = b[13] == 0x11 ? 12 : b[13] == 0x21 ? 36 : -1;
    if (alen < 0) return P_NO;
    if (n < 16) return P_MORE;
    int len = (b[14] << 8) | b[15];
    if (len != alen || 16 + len > F->max_header) return P_NO;
    if (n < 16 + len) return P_MORE;
    if (alen == 36 && (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)(b + 16)) ||
                       IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)(b + 32))))
        return P_NO;
    *hlen = 16 + len;
    return P_OK;
}

/* The header's source address (the real client), as a sockaddr. */
static void fast_client(const uint8_t *b, Addr *ss) {
    memset(ss, 0, sizeof *ss);
    if (b[13] == 0x11) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        memcpy(&a->sin_addr, b + 16, 4);
        memcpy(&a->sin_port, b + 24, 2);
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        memcpy(&a->sin6_addr, b + 16, 16);
        memcpy(&a->sin6_port, b + 48, 2);
    }
}

/* Whether the peer is in the route's trusted networks (an IPv4-mapped peer as IPv4, as Python's Trust does). */
static int fast_trusts(const Fast *F, const struct sockaddr_storage *ss) {
    const uint8_t *a;
    int fam;
    if (ss->ss_family == AF_INET) {
        a = (const uint8_t *)&((const struct sockaddr_in *)ss)->sin_addr;
        fam = AF_INET;
    } else if (ss->ss_family == AF_INET6) {
        const struct in6_addr *x = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(x)) {
            a = x->s6_addr + 12;
            fam = AF_INET;
        } else {
            a = x->s6_addr;
            fam = AF_INET6;
        }
    } else {
        return 0;
    }
    for (int i = 0; i < F->nnets; i++) {
        const Net *N = &F->nets[i];
        if (N->family != fam) continue;
        int full = N->prefix / 8, rem = N->prefix % 8;
        if (memcmp(a, N->addr, (size_t)full) != 0) continue;
        if (rem && ((a[full] ^ N->addr[full]) & (0xFF << (8 - rem)) & 0xFF)) continue;
        return 1;
    }
    return 0;
}

/* linux/in.h IP_PKTOPTIONS, linux/in6.h IPV6_2292PKTOPTIONS: an accepted TCP socket's control messages (its
   listener asked for IP_PKTINFO / IPV6_RECVPKTINFO), whose PKTINFO names the interface its SYN came in on. */
#ifndef IP_PKTOPTIONS
#define IP_PKTOPTIONS 9
#endif
#ifndef IPV6_2292PKTOPTIONS
#define IPV6_2292PKTOPTIONS 6
#endif

/* With trusted_interface: whether the client came in on one of the route's interfaces (unknown: no). */
static int fast_came_in_right(const Fast *F, int fd, int family) {
    if (F->nifs < 0) return 1;
    char buf[256];
    socklen_t len = sizeof buf;
    int rc = family == AF_INET6 ? getsockopt(fd, IPPROTO_IPV6, IPV6_2292PKTOPTIONS, buf, &len)
                                : getsockopt(fd, IPPROTO_IP, IP_PKTOPTIONS, buf, &len);
    if (rc < 0) return 0;
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    mh.msg_control = buf;
    mh.msg_controllen = len;
    int index = -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL && index < 0; c = CMSG_NXTHDR(&mh, c)) {
        size_t data = c->cmsg_len - CMSG_LEN(0);
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO && data >= sizeof(struct in_pktinfo)) {
            struct in_pktinfo pi;
            memcpy(&pi, CMSG_DATA(c), sizeof pi);
            index = pi.ipi_ifindex;
        } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO &&
                   data >= sizeof(struct in6_pktinfo)) {
            struct in6_pktinfo pi;
            memcpy(&pi, CMSG_DATA(c), sizeof pi);
            index = (int)pi.ipi6_ifindex;
        }
    }
    for (int i = 0; i < F->nifs; i++)
        if (F->ifindex[i] == index) return 1;
    return 0;
}

/* A new link of fast route F for client fd (it counts as open from here). */
static Link *fast_link(Pump *P, Fast *F, int fd, const struct sockaddr_storage *peer, double since) {
    Link *L = link_alloc(P, NULL);
    if (L == NULL) return NULL;
    L->end[0].fd = fd;
    memset(&L->peer, 0, sizeof L->peer);
    memcpy(&L->peer, peer, peer->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
    L->since = since;
    Py_INCREF(F);
    L->fast = F;
    L->fnext = F->lhead;
    if (F->lhead) F->lhead->fprev = L;
    F->lhead = L;
    F->open++;
    P->links++; /* the reference link_alloc made is the pump's, until closed, failed or handed to Python */
    return L;
}

/* Start the backend connect of a link whose first bytes are set (Pump.connect and the fast routes): 0, or an errno
   (the backend socket closed). A handshake that completes inside connect() leaves the link CONNECTED. */
static int link_connect(Link *L, const struct sockaddr *sa, socklen_t len, double timeout) {
    Pump *P = L->pump;
    int bfd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (bfd < 0) return errno;
    int one = 1;
    setsockopt(bfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc;
    do rc = connect(bfd, sa, len); while (rc < 0 && errno == EINTR);
    if (rc < 0 && errno != EINPROGRESS) {
        int err = errno;
        close(bfd);
        return err;
    }
    L->end[1].fd = bfd;
    if (rc == 0) { /* loopback and local tunnels may complete the handshake inside connect() */
        L->state = CONNECTED;
        return 0;
    }
    /* EINPROGRESS; but on loopback the handshake has usually completed inside connect() all the same. Sending
       the first bytes now tells (EAGAIN: still connecting) and, when it has, saves the connect's readiness
       round trip: an epoll registration, a wake-up, getsockopt(SO_ERROR) and the owner's callback. Where
       connects never complete at once (across a tunnel or a real network), the pump stops trying for a while. */
    Half *up = &L->half[0];
    if (up->rest && up->rest_off == 0) {
        if (P->probe_skip > 0) {
            P->probe_skip--;
        } else {
            ssize_t m;
            do m = send(bfd, up->rest, (size_t)up->rest_len,
                        MSG_NOSIGNAL | MSG_DONTWAIT | (L->first_read ? MSG_MORE : 0));
            while (m < 0 && errno == EINTR);
            if (m >= 0) {
                up->rest_off = m; /* link_start sends what is left (and uncorks) */
                P->probe_misses = 0;
                P->early++;
                L->state = CONNECTED;
                return 0;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) { /* refused, unreachable: the connect failed */
                int err = errno;
                close(bfd);
                L->end[1].fd = -1;
                return err;
            }
            if (++P->probe_misses >= PROBE_MISSES) P->probe_skip = PROBE_SKIP; /* (one miss more: skip again) */
        }
    }
    struct epoll_event ev;
    ev.events = EPOLLOUT;
    ev.data.ptr = &L->end[1];
    if (epoll_ctl(P->epfd, EPOLL_CTL_ADD, bfd, &ev) < 0) {
        int err = errno;
        close(bfd);
        L->end[1].fd = -1;
        return err;
    }
    L->end[1].mask = EPOLLOUT;
    L->state = CONNECTING;
    L->deadline = now_mono() + (timeout > 0 ? timeout : 0);
    deadline_add(P, L);
    return 0;
}

/* The header at b[0:hlen] is whole: connect the route's target and send it the header (send_proxy v2: the same
   bytes, which is what Python's encoder makes of the same addresses) and b[hlen:n]. */
static void fast_route(Link *L, const uint8_t *b, Py_ssize_t n, int hlen) {
    Fast *F = L->fast;
    Pump *P = L->pump;
    fast_client(b, &L->client);
    if (L->end[0].mask) { /* a head that waited: the client is watched again once linked */
        epoll_ctl(P->epfd, EPOLL_CTL_DEL, L->end[0].fd, NULL);
        L->end[0].mask = 0;
    }
    if (L->state == HEAD) deadline_remove(P, L);
    Py_ssize_t hsend = F->send_v2 ? hlen : 0, rest = n - hlen, total = hsend + rest;
    if (total > 0) {
        char *buf = PyMem_Malloc((size_t)total);
        if (buf == NULL) {
            fast_unreachable(L, ENOMEM);
            return;
        }
        memcpy(buf, b, (size_t)hsend);
        memcpy(buf + hsend, b + hlen, (size_t)rest);
        L->half[0].rest = buf;
        L->half[0].rest_len = total;
        L->half[0].rest_off = 0;
    }
    if (L->head) {
        PyMem_Free(L->head);
        L->head = NULL;
        L->head_len = 0;
    }
    L->state = CONNECTING;
    int err = link_connect(L, (struct sockaddr *)&F->target, F->target_len, F->connect_timeout);
    if (err) {
        fast_unreachable(L, err);
        return;
    }
    if (L->state == CONNECTED) {
        Py_INCREF(L);
        fast_connected(L);
        if (L->state == CONNECTED) link_start(L);
        Py_DECREF(L);
    }
}

/* Wait (in the pump) for the rest of a trusted client's header: the client is watched for reading until the
   listener's header_timeout from the accept. -1 when the wait cannot be set up (the link is gone: the
   caller hands the client to Python). */
static int head_wait(Link *L, const char *data, Py_ssize_t n) {
    Pump *P = L->pump;
    Fast *F = L->fast;
    L->state = HEAD;
    if (n > 0) {
        L->head = PyMem_Malloc(HEAD_MAX);
        if (L->head == NULL) goto fail;
        memcpy(L->head, data, (size_t)n);
        L->head_len = (int)n;
    }
    struct epoll_event ev;
    ev.events = EPOLLIN;
    ev.data.ptr = &L->end[0];
    if (epoll_ctl(P->epfd, EPOLL_CTL_ADD, L->end[0].fd, &ev) < 0) goto fail;
    L->end[0].mask = EPOLLIN;
    L->deadline = L->since + F->header_timeout;
    deadline_add(P, L);
    return 0;
fail:
    if (L->head) {
        PyMem_Free(L->head);
        L->head = NULL;
    }
    L->end[0].fd = -1; /* the caller keeps the descriptor */
    L->state = CLOSED;
    release(L);
    return -1;
}

/* Hand a waiting head to Python: _pump_head(fd, peer, local, data, end, since), end None (the bytes are not a
   header taken here), 0 (EOF), an errno, or -1 (header_timeout passed). The descriptor is Python's from here. */
static void head_handoff(Link *L, int end) {
    Pump *P = L->pump;
    Fast *F = L->fast;
    int fd = L->end[0].fd;
    if (L->state == HEAD) deadline_remove(P, L);
    if (L->end[0].mask) {
        epoll_ctl(P->epfd, EPOLL_CTL_DEL, fd, NULL);
        L->end[0].mask = 0;
    }
    L->end[0].fd = -1;
    L->state = CLOSED;
    PyObject *local = NULL;
    if (F->want_local) {
        struct sockaddr_storage ls;
        socklen_t llen = sizeof ls;
        if (getsockname(fd, (struct sockaddr *)&ls, &llen) == 0) local = addr_tuple(&ls);
        else local = Py_BuildValue("(si)", "", 0);
    } else {
        Py_INCREF(Py_None);
        local = Py_None;
    }
    PyObject *endobj = end == NOT_ENDED ? Py_NewRef(Py_None) : PyLong_FromLong(end);
    PyObject *args[6] = {PyLong_FromLong(fd), addr_tuple_a(&L->peer), local,
                         PyBytes_FromStringAndSize(L->head, L->head_len), endobj, PyFloat_FromDouble(L->since)};
    if (L->head) {
        PyMem_Free(L->head);
        L->head = NULL;
    }
    Py_INCREF(F);
    release(L); /* counted as Python's from here */
    PyObject *owner = fast_owner(F);
    int ok = owner != NULL;
    for (int i = 0; i < 6; i++) ok = ok && args[i] != NULL;
    if (ok) {
        call_method(P, owner, s_head, args, 6);
    } else {
        PyErr_Clear();
        close(fd);
    }
    for (int i = 0; i < 6; i++) Py_XDECREF(args[i]);
    Py_DECREF(F);
}

/* A waiting head's client is readable. */
static void head_readable(Link *L) {
    if (L->head == NULL) {
        L->head = PyMem_Malloc(HEAD_MAX);
        if (L->head == NULL) {
            head_handoff(L, NOT_ENDED);
            return;
        }
    }
    ssize_t n;
    do n = recv(L->end[0].fd, L->head + L->head_len, (size_t)(HEAD_MAX - L->head_len), 0);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        head_handoff(L, errno);
        return;
    }
    if (n == 0) {
        head_handoff(L, 0);
        return;
    }
    L->head_len += (int)n;
    int hlen = 0;
    switch (fast_parse(L->fast, (const uint8_t *)L->head, L->head_len, &hlen)) {
    case P_OK:
        fast_route(L, (const uint8_t *)L->head, L->head_len, hlen);
        return;
    case P_MORE:
        if (L->head_len < HEAD_MAX) return;
        /* fall through */
    default:
        head_handoff(L, NOT_ENDED);
    }
}

/* A just-accepted client of fast route F: 1 when the pump took it (routed, or waiting for its header), 0 when
   it goes to Python (*data: what was read, as Pump.accept returns it). */
static int fast_accept(Pump *P, Fast *F, int fd, const struct sockaddr_storage *peer, double since,
                       Py_ssize_t recv_size, PyObject **data) {
    ssize_t n;
    do n = recv(fd, P->rbuf, (size_t)recv_size, 0); while (n < 0 && errno == EINTR);
    int hlen = 0, parsed = P_NO;
    if (n > 0) parsed = fast_parse(F, (const uint8_t *)P->rbuf, n, &hlen);
    else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) parsed = P_MORE;
    if (parsed == P_OK || (parsed == P_MORE && n < HEAD_MAX)) {
        Link *L = fast_link(P, F, fd, peer, since);
        if (L != NULL) {
            if (parsed == P_OK) {
                fast_route(L, (const uint8_t *)P->rbuf, n, hlen);
                return 1;
            }
            if (head_wait(L, P->rbuf, n > 0 ? n : 0) == 0) return 1;
        } else {
            PyErr_Clear();
        }
    }
    if (n > 0) *data = PyBytes_FromStringAndSize(P->rbuf, n);
    else if (n == 0) *data = PyBytes_FromStringAndSize(NULL, 0);
    else if (errno == EAGAIN || errno == EWOULDBLOCK) *data = Py_NewRef(Py_None);
    else *data = PyLong_FromLong(errno);
    return 0;
}

static PyObject *Pump_accept(Pump *P, PyObject *args) {
    int lfd, max, want_local = 0;
    Py_ssize_t recv_size = 0;
    PyObject *fastobj = Py_None;
    long py_open = 0;
    if (!PyArg_ParseTuple(args, "ii|pnOl", &lfd, &max, &want_local, &recv_size, &fastobj, &py_open)) return NULL;
    if (recv_size < 0 || recv_size > (1 << 20)) {
        PyErr_SetString(PyExc_ValueError, "pump: recv_size must be 0..1048576");
        return NULL;
    }
    Fast *F = NULL;
    if (fastobj != Py_None) {
        if (!PyObject_TypeCheck(fastobj, &FastType)) {
            PyErr_SetString(PyExc_TypeError, "pump: fast must be a Fast route or None");
            return NULL;
        }
        if (recv_size < HEAD_MAX) {
            PyErr_SetString(PyExc_ValueError, "pump: a fast route needs recv_size >= 512");
            return NULL;
        }
        if (((Fast *)fastobj)->enabled && P->epfd >= 0) F = (Fast *)fastobj;
    }
    double since = F ? now_mono() : 0;
    long slow = 0;
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
        PyObject *data = NULL;
        if (F && F->open + py_open + slow < F->max_open && fast_trusts(F, &ss) &&
            fast_came_in_right(F, fd, ss.ss_family) && fast_accept(P, F, fd, &ss, since, recv_size, &data))
            continue;
        if (F && data == NULL && PyErr_Occurred()) { /* no memory for its bytes: drop this client */
            PyErr_Clear();
            close(fd);
            continue;
        }
        slow++;
        PyObject *peer = addr_tuple(&ss), *local = NULL, *item = NULL;
        if (want_local) {
            struct sockaddr_storage ls;
            socklen_t llen = sizeof ls;
            if (getsockname(fd, (struct sockaddr *)&ls, &llen) == 0) local = addr_tuple(&ls);
            else local = Py_BuildValue("(si)", "", 0);
        } else {
            Py_INCREF(Py_None);
            local = Py_None;
        }
        if (data != NULL) {
            /* read already (a fast route's client that is Python's) */
        } else if (recv_size > 0) {
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
    Link *L = link_new(P, cfd, -1, owner, initial, first_read, pass_resets, sink_client);
    if (L == NULL) return NULL;
    int err = link_connect(L, (struct sockaddr *)&ss, len, timeout);
    if (err) { /* no backend socket is left open; the client's stays the caller's */
        L->end[0].fd = -1;
        L->state = FAILED;
        Py_DECREF(L);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_INCREF(L); /* the pump's reference, until closed or failed */
    P->links++;
    return (PyObject *)L;
}

static PyObject *Pump_get_stats(Pump *P, void *c) {
    return Py_BuildValue("{s:l,s:n,s:i,s:l,s:l}", "pipes_created", P->created, "held", P->held, "pipes_free",
                         P->npipes, "links", P->links, "connected_at_once", P->early);
}

static PyMethodDef Pump_methods[] = {
    {"fileno", (PyCFunction)Pump_fileno, METH_NOARGS, "the epoll descriptor for the event loop to watch"},
    {"run", (PyCFunction)Pump_run, METH_NOARGS, "handle what is ready (call when fileno() is readable)"},
    {"accept", (PyCFunction)Pump_accept, METH_VARARGS,
     "accept(listen_fd, max, want_local=False, recv_size=0) -> [(fd, (host, port), local, first)]: up to max "
     "clients, non-blocking; OSError when the first accept fails (out of descriptors). local: (host, port) with "
     "want_local, else None; first (with recv_size): what the client sent already (bytes, b'' at EOF, None when "
     "nothing yet, an int errno on error), else None. accept(..., fast, py_open): clients of the Fast route `fast` "
     "(trusted, with a header of its shape, while fast.open + py_open < max_open) are routed here and not "
     "returned"},
    {"connect", (PyCFunction)(void (*)(void))Pump_connect, METH_VARARGS | METH_KEYWORDS,
     "connect(client, family, addr, initial, timeout, owner, first_read=False, pass_resets=False, "
     "sink_client=False) -> Link (sink_client: after `initial`, the client's bytes are read and dropped)"},
    {"close", (PyCFunction)Pump_close, METH_NOARGS, "close the epoll set, the timer and the pooled pipes"},
    {NULL},
};

static PyGetSetDef Pump_getset[] = {
    {"stats", (getter)Pump_get_stats, NULL,
     "pipes created, bytes held in pipes, free pipes, open links, connects found complete by the first send", NULL},
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

/* ---- Fast type --------------------------------------------------------------------------------------------- */

static PyObject *Fast_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"owner", NULL};
    PyObject *owner;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O", kwlist, &owner)) return NULL;
    Fast *F = (Fast *)type->tp_alloc(type, 0);
    if (F == NULL) return NULL;
    F->owner = PyWeakref_NewRef(owner, NULL); /* weak: the owner holds the route */
    if (F->owner == NULL) {
        Py_DECREF(F);
        return NULL;
    }
    F->max_header = 0;
    return (PyObject *)F;
}

static void Fast_dealloc(Fast *F) {
    Py_XDECREF(F->owner);
    Py_TYPE(F)->tp_free((PyObject *)F);
}

static PyObject *Fast_configure(Fast *F, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"trusted", "family", "target", "send_v2", "header_timeout", "connect_timeout",
                             "max_header", "max_open", "want_local", "log_routed", "interfaces", NULL};
    PyObject *nets, *target, *ifs = Py_None;
    int family, send_v2, max_header, want_local, log_routed;
    double header_timeout, connect_timeout;
    long max_open;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OiOpddilpp|O", kwlist, &nets, &family, &target, &send_v2,
                                     &header_timeout, &connect_timeout, &max_header, &max_open, &want_local,
                                     &log_routed, &ifs))
        return NULL;
    int indexes[MAX_IFS], nifs = -1;
    if (ifs != Py_None) {
        PyObject *iseq = PySequence_Fast(ifs, "fast: interfaces must be a sequence of interface indexes or None");
        if (iseq == NULL) return NULL;
        Py_ssize_t ni = PySequence_Fast_GET_SIZE(iseq);
        if (ni > MAX_IFS) {
            Py_DECREF(iseq);
            PyErr_Format(PyExc_ValueError, "fast: at most %d interfaces", MAX_IFS);
            return NULL;
        }
        for (Py_ssize_t i = 0; i < ni; i++) {
            long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(iseq, i));
            if (v == -1 && PyErr_Occurred()) {
                Py_DECREF(iseq);
                return NULL;
            }
            indexes[i] = (int)v;
        }
        nifs = (int)ni;
        Py_DECREF(iseq);
    }
    PyObject *seq = PySequence_Fast(nets, "fast: trusted must be a sequence of (family, packed, prefix)");
    if (seq == NULL) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    if (count > MAX_NETS) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "fast: at most %d trusted networks", MAX_NETS);
        return NULL;
    }
    Net parsed[MAX_NETS];
    for (Py_ssize_t i = 0; i < count; i++) {
        int fam, prefix;
        const char *packed;
        Py_ssize_t plen;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "iy#i", &fam, &packed, &plen, &prefix)) {
            Py_DECREF(seq);
            return NULL;
        }
        Py_ssize_t want = fam == AF_INET ? 4 : fam == AF_INET6 ? 16 : -1;
        if (want < 0 || plen != want || prefix < 0 || prefix > want * 8) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "fast: a trusted network is (AF_INET, 4 bytes, 0..32) or "
                                              "(AF_INET6, 16 bytes, 0..128)");
            return NULL;
        }
        memset(&parsed[i], 0, sizeof(Net));
        parsed[i].family = fam;
        parsed[i].prefix = prefix;
        memcpy(parsed[i].addr, packed, (size_t)plen);
    }
    Py_DECREF(seq);
    struct sockaddr_storage ss;
    socklen_t len;
    if (parse_sockaddr(family, target, &ss, &len) < 0) return NULL;
    if (max_header < 16 || header_timeout < 0 || connect_timeout < 0) {
        PyErr_SetString(PyExc_ValueError, "fast: max_header >= 16 and timeouts >= 0");
        return NULL;
    }
    memcpy(F->nets, parsed, sizeof(Net) * (size_t)count);
    F->nnets = (int)count;
    memcpy(F->ifindex, indexes, sizeof(int) * (size_t)(nifs > 0 ? nifs : 0));
    F->nifs = nifs;
    F->target = ss;
    F->target_len = len;
    F->send_v2 = send_v2;
    F->header_timeout = header_timeout;
    F->connect_timeout = connect_timeout;
    F->max_header = max_header;
    F->max_open = max_open;
    F->want_local = want_local;
    F->log_routed = log_routed;
    F->enabled = 1;
    Py_RETURN_NONE;
}

static PyObject *Fast_links(Fast *F, PyObject *unused) {
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    for (Link *L = F->lhead; L != NULL; L = L->fnext) {
        if (PyList_Append(out, (PyObject *)L) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

static PyObject *Fast_get_enabled(Fast *F, void *c) { return PyBool_FromLong(F->enabled); }
static int Fast_set_enabled(Fast *F, PyObject *v, void *c) {
    int b = PyObject_IsTrue(v);
    if (b < 0) return -1;
    if (b && F->max_header == 0) {
        PyErr_SetString(PyExc_ValueError, "fast: configure() first");
        return -1;
    }
    F->enabled = b;
    return 0;
}
static PyObject *Fast_get_open(Fast *F, void *c) { return PyLong_FromLong(F->open); }
static PyObject *Fast_get_accepted(Fast *F, void *c) { return PyLong_FromLong(F->accepted); }

/* For the tests: whether the route trusts a peer address (the same check Pump.accept makes). */
static PyObject *Fast_trusts(Fast *F, PyObject *args) {
    const char *host;
    if (!PyArg_ParseTuple(args, "s", &host)) return NULL;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        ss.ss_family = AF_INET;
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        ss.ss_family = AF_INET6;
    } else {
        PyErr_Format(PyExc_ValueError, "fast: not an IP address: %s", host);
        return NULL;
    }
    return PyBool_FromLong(fast_trusts(F, &ss));
}

/* For the tests: fast_parse on bytes -> the header's length (taken), 0 (a prefix of one), -1 (Python's). */
static PyObject *Fast_parse(Fast *F, PyObject *args) {
    const char *data;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "y#", &data, &n)) return NULL;
    if (F->max_header == 0) {
        PyErr_SetString(PyExc_ValueError, "fast: configure() first");
        return NULL;
    }
    int hlen = 0, r = fast_parse(F, (const uint8_t *)data, n, &hlen);
    return PyLong_FromLong(r == P_OK ? hlen : r == P_MORE ? 0 : -1);
}

static PyGetSetDef Fast_getset[] = {
    {"enabled", (getter)Fast_get_enabled, (setter)Fast_set_enabled, "new clients take this route (Pump.accept)",
     NULL},
    {"open", (getter)Fast_get_open, NULL, "its connections open now (waiting for a header, connecting, linked)",
     NULL},
    {"accepted", (getter)Fast_get_accepted, NULL, "its connections whose target answered, ever", NULL},
    {NULL},
};

static PyMethodDef Fast_methods[] = {
    {"configure", (PyCFunction)(void (*)(void))Fast_configure, METH_VARARGS | METH_KEYWORDS,
     "configure(trusted, family, target, send_v2, header_timeout, connect_timeout, max_header, max_open, "
     "want_local, log_routed, interfaces=None): set what the route does and enable it (interfaces: the "
     "trusted_interface indexes a trusted peer must come in on; None: any)"},
    {"links", (PyCFunction)Fast_links, METH_NOARGS, "its open links (for an idle sweep or a close)"},
    {"_trusts", (PyCFunction)Fast_trusts, METH_VARARGS, "(tests) whether a peer address is trusted"},
    {"_parse", (PyCFunction)Fast_parse, METH_VARARGS,
     "(tests) the header check on bytes: its length when taken, 0 for a prefix of one, -1 for Python's"},
    {NULL},
};

static PyTypeObject FastType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "wiregate.datapath._pump.Fast",
    .tp_basicsize = sizeof(Fast),
    .tp_dealloc = (destructor)Fast_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Fast(owner): a listener's route taken in C (see Pump.accept); owner is held weakly",
    .tp_methods = Fast_methods,
    .tp_getset = Fast_getset,
    .tp_new = Fast_new,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "wiregate.datapath._pump", "The short-connection hot path in C (Linux).", -1, NULL,
};

PyMODINIT_FUNC PyInit__pump(void) {
    if (PyType_Ready(&PumpType) < 0 || PyType_Ready(&LinkType) < 0 || PyType_Ready(&FastType) < 0) return NULL;
    s_connected = PyUnicode_InternFromString("_pump_connected");
    s_closed = PyUnicode_InternFromString("_pump_closed");
    s_head = PyUnicode_InternFromString("_pump_head");
    s_unreachable = PyUnicode_InternFromString("_pump_unreachable");
    s_routed = PyUnicode_InternFromString("_pump_routed");
    if (s_connected == NULL || s_closed == NULL || s_head == NULL || s_unreachable == NULL || s_routed == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&PumpType);
    Py_INCREF(&LinkType);
    Py_INCREF(&FastType);
    if (PyModule_AddObject(m, "Pump", (PyObject *)&PumpType) < 0 ||
        PyModule_AddObject(m, "Link", (PyObject *)&LinkType) < 0 ||
        PyModule_AddObject(m, "Fast", (PyObject *)&FastType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
