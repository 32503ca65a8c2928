"""xHCI layouts (construct), derived fast codecs, rings.

Every layout is declared once with construct (spec names, spec section in each field's doc);
fast struct+mask codecs and mask tables are generated from those declarations at import time.

Public API (import from the submodules):

``dbc_harness.drivers.xhci.layout``
    ``Layout(name, construct_struct, abbrev=None)``: ``.name``, ``.size``, ``.construct``,
    ``.fields`` (name -> ``Field``: byte_offset, word_size, shift, width, mask, dword,
    dword_shift, bit_offset, value_shift, default, enum), ``.parse(buf, offset=0) -> dict``
    (flat, plain ints), ``.build(**fields) -> bytes`` (unspecified fields: default or 0),
    ``.pack_into(buf, offset, **fields)``, ``.decode(int) / .encode(**f) -> int``,
    ``.get(value, name)``, ``.replace(value, **fields)``, ``.field(name)``, ``.mask_table()``,
    ``.render(fields, title=None)``, ``.construct_parse`` / ``.construct_build`` (reference path).
    ``AlignedAddress`` (pointer stored in upper bits), ``format_hex``.
``dbc_harness.drivers.xhci.trb``
    ``TRBType``, ``CompletionCode`` (IntEnum), ``TRB_SIZE``; layouts ``NORMAL``, ``SETUP_STAGE``,
    ``DATA_STAGE``, ``STATUS_STAGE``, ``ISOCH``, ``LINK``, ``EVENT_DATA``, ``NO_OP``,
    ``NO_OP_COMMAND``, ``ENABLE_SLOT_COMMAND``, ``DISABLE_SLOT_COMMAND``,
    ``ADDRESS_DEVICE_COMMAND``, ``CONFIGURE_ENDPOINT_COMMAND``, ``RESET_ENDPOINT_COMMAND``,
    ``SET_TR_DEQUEUE_POINTER_COMMAND``, ``TRANSFER_EVENT``, ``COMMAND_COMPLETION_EVENT``,
    ``PORT_STATUS_CHANGE_EVENT``, ``HOST_CONTROLLER_EVENT``, ``GENERIC_TRB``;
    ``TRB_LAYOUTS`` (TRBType -> Layout), ``layout_for(type)``, ``trb_type_of(buf, offset)``,
    ``cycle_of(buf, offset)``, ``decode_trb(buf, offset) -> (TRBType | int, dict)``,
    ``render_trb(buf, offset) -> str``, ``render_fields(type, fields) -> str``.
``dbc_harness.drivers.xhci.registers``
    Register value layouts: CAPLENGTH, HCIVERSION, HCSPARAMS1-3, HCCPARAMS1-2, DBOFF, RTSOFF,
    USBCMD, USBSTS, PAGESIZE, DNCTRL, CRCR, DCBAAP, CONFIG, PORTSC (+PORTSC_RW1C), MFINDEX,
    IMAN, IMOD, ERSTSZ, ERSTBA, ERDP, DOORBELL, EXTENDED_CAPABILITY, USBLEGSUP, USBLEGCTLSTS,
    SUPPORTED_PROTOCOL, DCID, DCDB, DCERSTSZ, DCERSTBA, DCERDP, DCCTRL, DCST, DCPORTSC
    (+DCPORTSC_RW1C), DCCP, DCDDI1, DCDDI2; ``REGISTERS`` (name -> Layout).
    ``RegisterBlock``: ``.offset(name)``, ``.layout(name)``, ``.registers``, ``.size``,
    ``.read_all(mmio, base)``, ``.render(values, base=None)`` (multi-line decoded view).
    Blocks: ``CAPABILITY_REGS``, ``OPERATIONAL_REGS``, ``PORT_REGS`` (+``PORT_REGS_OFFSET``,
    ``PORT_REGS_STRIDE``), ``INTERRUPTER_REGS`` (+``INTERRUPTER_REGS_OFFSET``/``_STRIDE``),
    ``DBC_REGS`` (``DBC_REGS.offset("DCCTRL") == 0x20``). ``render_register(name, value)``,
    ``read_register(mmio, offset, layout)``, ``write_register(mmio, offset, layout, value)``,
    ``XECP_ID_USB_LEGACY_SUPPORT`` / ``_SUPPORTED_PROTOCOL`` / ``_DEBUG_CAPABILITY``.
``dbc_harness.drivers.xhci.contexts``
    ``SLOT_CONTEXT``, ``ENDPOINT_CONTEXT`` (32 bytes), ``DBC_INFO_CONTEXT``,
    ``DBC_ENDPOINT_CONTEXT`` (64 bytes), ``DBC_CONTEXT`` (construct Struct, 192 bytes),
    ``DBC_CONTEXT_SIZE``, ``DBC_INFO_OFFSET``, ``DBC_OUT_EP_OFFSET`` (64: OUT ring, target ->
    host, EP Type 2), ``DBC_IN_EP_OFFSET`` (128: IN ring, host -> target, EP Type 6),
    ``ERST_ENTRY``, ``EPType``, ``EPState``.
``dbc_harness.drivers.xhci.strings``
    ``build_string_descriptor(text)``, ``parse_string_descriptor(buf, offset=0)``,
    ``build_string0(langids)``, ``parse_string0(buf, offset=0)``, ``STRING_DESCRIPTOR``,
    ``STRING0_DESCRIPTOR``, ``DESCRIPTOR_HEADER``, ``LANGID_EN_US``.
``dbc_harness.drivers.xhci.ring`` (the one producer ring and event-ring consumer: DbC driver,
generic host path, minimal DbC producer)
    ``ProducerRing(buffer, trbs=None, name=)`` / ``ProducerRing.allocate(space, trbs, name=,
    limit=None)``: transfer/command ring, Link TRB with Toggle Cycle at the end, at most
    ``max_in_flight`` = trbs - 2 TRBs in flight (one slot always free); ``enqueue(layout,
    tag=None, **fields) -> address`` (C = PCS, dword 3 written last; ``RingFull``),
    ``complete(address) -> [tags]``; ``enqueue_normal(address, length, chain=, isp=, ioc=) ->
    (index, cycle)`` / ``rewrite_normal(...)`` / ``release(count)`` (the DbC data path);
    ``put(raw) -> address`` (prebuilt TRB, no accounting); ``cancel(address)`` (No Op in place);
    ``free_slots``, ``in_flight``, ``pcs``, ``enqueue_pointer``, ``dequeue_pointer`` /
    ``dequeue_cycle_state`` (TR Dequeue Pointer + DCS), ``address_of``, ``index_of``,
    ``reset()``, ``free()``, ``array()``.
    ``EventRing(segment, erst, trbs=None)`` / ``EventRing.allocate(space, trbs, limit=None)``:
    one-segment ERST (``erst_address``, ``erst_size``), ``pop() -> (address, TRBType | int,
    fields) | None``, ``drain(limit=None)``, ``ready()`` / ``offset()`` / ``advance()`` (read in
    place), ``discard()``, ``pending()`` (count), ``dequeue_pointer`` (for ERDP/DCERDP), ``ccs``,
    ``reset()``, ``free()``.
    ``trb_array(view)`` (numpy structured view, ``TRB_DTYPE``), ``cycle_bits(arr)``,
    ``find_cycle_flip(arr, cycle, start=0)``.
``dbc_harness.harness.benchmarks.codec``
    ``run(quick=False)``: ``dbc-harness bench codec``.
``dbc_harness.drivers.xhci.errors``
    ``XhciLayoutError`` (family base), ``LayoutError``, ``DescriptorError``, ``RingError``,
    ``RingFull``.
"""
