/*
 * The DNS benchmark's ceiling: a UDP server that answers every datagram with
 * one fixed, prebuilt DNS response, copying only the query's ID into it.
 *
 * It does no parsing, no lookup and no allocation, so what it costs per
 * query is the kernel's UDP receive + send path and nothing else: the most
 * any DNS server can do per core with one recvfrom + one sendto per query,
 * which is the model kubedisco and CoreDNS follow.
 *
 * Threads: one per CPU this process may run on (sched_getaffinity, so
 * `taskset -c 1` gives one), each with its own socket bound with
 * SO_REUSEPORT, the same model as kubedisco's UDP front end (one socket per
 * core). Blocking I/O: a busy server's receive queue is never empty, so
 * there is no readiness polling to save.
 *
 * C because it needs nothing but the C compiler every Rust toolchain already
 * links with, builds in a fraction of a second, and has no runtime
 * (scheduler, poller, allocator) between the two system calls that would
 * lower the ceiling.
 *
 * usage: responder ADDR PORT     e.g. responder 127.0.0.1 5300
 * Prints "ready" on stdout once every socket is bound. Runs until killed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * The fixed response, a typical answer of the benchmark's query mix:
 * NOERROR, authoritative, 1 question (svc-0.bench-0.svc.cluster.local A)
 * and 5 A records of 10.0.0.1-5, TTL 5 (129 bytes).
 */
static const unsigned char response[] = {
	0x00, 0x00, 0x85, 0x00, /* ID (replaced), QR AA RD, NOERROR */
	0x00, 0x01, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, /* QD 1, AN 5 */
	5, 's', 'v', 'c', '-', '0',
	7, 'b', 'e', 'n', 'c', 'h', '-', '0',
	3, 's', 'v', 'c',
	7, 'c', 'l', 'u', 's', 't', 'e', 'r',
	5, 'l', 'o', 'c', 'a', 'l', 0,
	0x00, 0x01, 0x00, 0x01, /* A IN */
#define ANSWER(last) \
	0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x05, \
	0x00, 0x04, 10, 0, 0, last
	ANSWER(1), ANSWER(2), ANSWER(3), ANSWER(4), ANSWER(5),
};

static struct sockaddr_in bind_addr;

static int bound_socket(void)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	int one = 1;
	int size = 4 << 20;
	if (fd < 0) {
		perror("socket");
		exit(1);
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
		perror("SO_REUSEPORT");
		exit(1);
	}
	/* The same receive queue depth kubedisco asks for. */
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
	if (bind(fd, (struct sockaddr *)&bind_addr, sizeof bind_addr) < 0) {
		perror("bind");
		exit(1);
	}
	return fd;
}

static void *serve(void *arg)
{
	int fd = (int)(long)arg;
	unsigned char packet[sizeof response];
	unsigned char query[4096];
	struct sockaddr_storage peer;
	socklen_t peer_len;
	ssize_t n;

	memcpy(packet, response, sizeof response);
	for (;;) {
		peer_len = sizeof peer;
		n = recvfrom(fd, query, sizeof query, 0, (struct sockaddr *)&peer, &peer_len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("recvfrom");
			continue;
		}
		if (n < 12)
			continue;
		packet[0] = query[0];
		packet[1] = query[1];
		(void)sendto(fd, packet, sizeof packet, 0, (struct sockaddr *)&peer, peer_len);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	cpu_set_t cpus;
	int threads, i;
	int *fds;
	pthread_t thread;

	if (argc != 3) {
		fprintf(stderr, "usage: %s ADDR PORT\n", argv[0]);
		return 2;
	}
	memset(&bind_addr, 0, sizeof bind_addr);
	bind_addr.sin_family = AF_INET;
	bind_addr.sin_port = htons((unsigned short)atoi(argv[2]));
	if (inet_pton(AF_INET, argv[1], &bind_addr.sin_addr) != 1) {
		fprintf(stderr, "responder: not an IPv4 address: %s\n", argv[1]);
		return 2;
	}
	threads = 1;
	if (sched_getaffinity(0, sizeof cpus, &cpus) == 0 && CPU_COUNT(&cpus) > 0)
		threads = CPU_COUNT(&cpus);

	fds = calloc((size_t)threads, sizeof *fds);
	if (fds == NULL)
		return 1;
	for (i = 0; i < threads; i++)
		fds[i] = bound_socket();
	for (i = 1; i < threads; i++) {
		if (pthread_create(&thread, NULL, serve, (void *)(long)fds[i]) != 0) {
			perror("pthread_create");
			return 1;
		}
	}
	printf("ready: %d socket(s) on %s:%s\n", threads, argv[1], argv[2]);
	fflush(stdout);
	serve((void *)(long)fds[0]);
	return 0;
}
