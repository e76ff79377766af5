/* The round trip of one cache line between two CPUs, in nanoseconds: two threads pinned to CPU a
 * and CPU b hand a flag back and forth N times. Cores that share a cache (one L3) answer in tens
 * of nanoseconds, cores that do not (another die, CCD or socket) in hundreds. A VM's vCPUs can
 * move between the two cases while it runs, and a CPU kernel whose phases hand data from one
 * thread to another slows down with the latter (benchmarks/RESULTS.md, nineteenth round).
 * benchmarks/run.py compiles and runs it for its environment line.
 *
 *     cc -O2 -pthread -o core_latency core_latency.c && ./core_latency 0 1
 *
 * Prints the round trip in ns (the best of 5 runs of 20,000), or exits 1 with an error line. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { kTrips = 20000, kRuns = 5 };

static _Alignas(64) atomic_int flag;
static atomic_int peer_state; /* 0 starting, 1 pinned, -1 could not pin */

static int pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void* answer(void* arg) {
  if (pin(*(int*)arg) != 0) {
    atomic_store(&peer_state, -1);
    return NULL;
  }
  atomic_store(&peer_state, 1);
  for (int i = 0; i < kTrips * kRuns; i++) {
    while (atomic_load_explicit(&flag, memory_order_acquire) != 1) {
    }
    atomic_store_explicit(&flag, 0, memory_order_release);
  }
  return NULL;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "error: usage: core_latency CPU_A CPU_B\n");
    return 1;
  }
  int a = atoi(argv[1]), b = atoi(argv[2]);
  pthread_t peer;
  /* the two must be different CPUs: on one, each spin would wait out the other's time slice */
  if (a == b || pin(a) != 0 || pthread_create(&peer, NULL, answer, &b) != 0) {
    fprintf(stderr, "error: cannot run on two CPUs %d and %d\n", a, b);
    return 1;
  }
  while (atomic_load(&peer_state) == 0) {
  }
  if (atomic_load(&peer_state) < 0) {
    pthread_join(peer, NULL);
    fprintf(stderr, "error: cannot pin a thread to CPU %d\n", b);
    return 1;
  }
  double best = 1e30;
  for (int r = 0; r < kRuns; r++) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < kTrips; i++) {
      atomic_store_explicit(&flag, 1, memory_order_release);
      while (atomic_load_explicit(&flag, memory_order_acquire) != 0) {
      }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / kTrips;
    if (ns < best) best = ns;
  }
  pthread_join(peer, NULL);
  printf("%.0f\n", best);
  return 0;
}
