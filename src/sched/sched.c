/* placeholder */ typedef int bd_placeholder_t;
