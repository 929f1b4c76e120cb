from includes.engine cimport mp_engine


cdef class Engine:
    cdef mp_engine *eng
    cdef object _running

    cdef mp_engine *_live(self) except NULL
