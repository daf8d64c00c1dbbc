/* Stands in for an SDK library the link lists but these tests need nothing from. */
int stub_library_marker;
