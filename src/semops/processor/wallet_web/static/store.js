// The wallet's state in this browser (IndexedDB of the processor's origin):
// - "device": one record, the enrolled device: its non-extractable CryptoKey (IndexedDB
//   keeps the object itself, so the key material never becomes readable), its kid, the
//   account it signs for and what the enrolment answer said;
// - "orders": every order made here, stored (signed token included) before it is sent, so
//   a retry after a lost answer sends the identical order and can never pay twice.

export const DB_NAME = "semops-wallet";
const DB_VERSION = 1;
const DEVICE = "device";
const ORDERS = "orders";
const DEVICE_ID = "this";

function open() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, DB_VERSION);
    request.onupgradeneeded = () => {
      const db = request.result;
      if (!db.objectStoreNames.contains(DEVICE)) db.createObjectStore(DEVICE, { keyPath: "id" });
      if (!db.objectStoreNames.contains(ORDERS)) {
        const orders = db.createObjectStore(ORDERS, { keyPath: "order_id" });
        orders.createIndex("request_id", "request_id", { unique: false });
      }
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function run(storeName, mode, work) {
  const db = await open();
  try {
    return await new Promise((resolve, reject) => {
      const transaction = db.transaction(storeName, mode);
      const request = work(transaction.objectStore(storeName));
      let result;
      request.onsuccess = () => { result = request.result; };
      transaction.oncomplete = () => resolve(result);
      transaction.onerror = () => reject(transaction.error);
      transaction.onabort = () => reject(transaction.error);
    });
  } finally {
    db.close();
  }
}

export async function loadDevice() {
  return (await run(DEVICE, "readonly", (store) => store.get(DEVICE_ID))) || null;
}

export async function saveDevice(record) {
  await run(DEVICE, "readwrite", (store) => store.put({ ...record, id: DEVICE_ID }));
}

export async function forgetDevice() {
  await run(DEVICE, "readwrite", (store) => store.delete(DEVICE_ID));
}

export async function saveOrder(record) {
  await run(ORDERS, "readwrite", (store) => store.put(record));
}

export async function loadOrder(orderId) {
  return (await run(ORDERS, "readonly", (store) => store.get(orderId))) || null;
}

export async function ordersForRequest(requestId) {
  return run(ORDERS, "readonly", (store) => store.index("request_id").getAll(requestId));
}
