/* Stub of the SDK's libc for C projects (the Rust firmware brings its own shim instead):
 * the two routines its libraries need beyond the ROM's. */
const char stub_ctype[257] = { 0 };
const char *__ctype_ptr__ = stub_ctype;

void *memchr(const void *s, int c, unsigned int n)
{
    const unsigned char *p = s;
    for (; n > 0; n--, p++) {
        if (*p == (unsigned char)c) {
            return (void *)p;
        }
    }
    return 0;
}
