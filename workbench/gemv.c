/* Matrix-vector product for decoding one token on the CPU: y = W x (+ b).
 *
 * W is an nn.Linear weight, (n_out, n_in) row-major float32, so every output is the dot product of one contiguous
 * weight row with x. Decoding is bound by how fast the weights stream from memory; this loop keeps four rows'
 * streams in flight, prefetches the next four, and splits the rows over the OpenMP threads torch uses
 * (libgomp is shared with torch: the process loads it once).
 *
 * Every row is summed in one fixed order whatever the thread count or its position in a block of four:
 * 16 lane sums over the whole 16-wide chunks, those lanes added 0..15, then the leftover elements, then the bias.
 * So a worker on one thread reproduces a server on two, bit for bit.
 *
 * Built at first use by workbench/native.py with `cc -O3 -march=native -fopenmp`; the lane loops vectorize.
 */
#include <stdint.h>

#define LANES 16 /* floats per AVX-512 register; the compiler turns each lane loop into one vector operation */
#define ROWS 4   /* rows per block: four weight streams at once */

static float finish(const float *lanes, const float *row, const float *x, int64_t from, int64_t n_in) {
    float sum = 0.0f;
    for (int j = 0; j < LANES; ++j) sum += lanes[j];
    for (int64_t k = from; k < n_in; ++k) sum += row[k] * x[k];
    return sum;
}

static void four_rows(const float *w, const float *x, int64_t n_in, float *out) {
    const float *w0 = w, *w1 = w + n_in, *w2 = w + 2 * n_in, *w3 = w + 3 * n_in;
    const float *next = w + ROWS * n_in; /* this thread's next block under a static schedule */
    float a0[LANES] = {0}, a1[LANES] = {0}, a2[LANES] = {0}, a3[LANES] = {0};
    const int64_t body = n_in - n_in % LANES;
    for (int64_t k = 0; k < body; k += LANES) {
        __builtin_prefetch(next + k, 0, 0);
        __builtin_prefetch(next + n_in + k, 0, 0);
        __builtin_prefetch(next + 2 * n_in + k, 0, 0);
        __builtin_prefetch(next + 3 * n_in + k, 0, 0);
        for (int j = 0; j < LANES; ++j) {
            const float xv = x[k + j];
            a0[j] += w0[k + j] * xv;
            a1[j] += w1[k + j] * xv;
            a2[j] += w2[k + j] * xv;
            a3[j] += w3[k + j] * xv;
        }
    }
    out[0] = finish(a0, w0, x, body, n_in);
    out[1] = finish(a1, w1, x, body, n_in);
    out[2] = finish(a2, w2, x, body, n_in);
    out[3] = finish(a3, w3, x, body, n_in);
}

static float one_row(const float *w, const float *x, int64_t n_in) {
    float a[LANES] = {0};
    const int64_t body = n_in - n_in % LANES;
    for (int64_t k = 0; k < body; k += LANES)
        for (int j = 0; j < LANES; ++j) a[j] += w[k + j] * x[k + j];
    return finish(a, w, x, body, n_in);
}

/* y[i] = dot(W[i, :], x) + (b ? b[i] : 0) for i < n_out, on n_threads OpenMP threads. */
void wb_gemv(const float *W, const float *x, const float *b, float *y, int64_t n_out, int64_t n_in, int n_threads) {
    const int64_t blocks = n_out / ROWS;
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t i = 0; i < blocks; ++i) four_rows(W + i * ROWS * n_in, x, n_in, y + i * ROWS);
    for (int64_t r = blocks * ROWS; r < n_out; ++r) y[r] = one_row(W + r * n_in, x, n_in);
    if (b)
        for (int64_t r = 0; r < n_out; ++r) y[r] += b[r];
}
